"""``bigmodel compress`` on a byte-level language model, as a user runs it: quantize, distill and
report with --json and as tables, and the one-line refusals."""

import json
from pathlib import Path

import pytest

from bigmodel import artifacts
from tests.compress_helpers import trained, tree_digest
from tests.conftest import run_cli
from tests.lm_helpers import text_dataset, trained_lm

SIDE = {"params", "file_bytes", "tokens_per_s_b1", "tokens_per_s_b16", "metric", "metric_name"}


def _json(out) -> dict:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_lm(tmp_path_factory, text_dataset(tmp_path_factory), steps=40)


def test_quantize_distill_report_an_lm(lm: Path, tmp_path: Path):
    before = tree_digest(lm)
    q = _json(
        run_cli(
            "compress",
            "quantize",
            str(lm),
            "--max-drop",
            "0.02",
            "--out",
            str(tmp_path / "q"),
            "--runs",
            "1",
            "--json",
        )
    )
    assert set(q["original"]) >= SIDE and set(q["compressed"]) >= SIDE
    assert q["compressed"]["metric_name"] == "bits_per_byte" and q["ratios"]["metric_relative_drop"] <= 0.02
    assert q["ratios"]["file_bytes"] > 1.5 and {"speedup_b1", "speedup_b16"} <= set(q["ratios"])
    assert q["params"]["backend"] == "torch" and q["params"]["kept_float"] == []

    d = _json(
        run_cli(
            "compress",
            "distill",
            str(lm),
            "--size",
            "tiny",
            "--max-steps",
            "10",
            "--out",
            str(tmp_path / "s"),
            "--runs",
            "1",
            "--json",
        )
    )
    assert set(d["compressed"]) >= SIDE and d["params"]["size"] == "tiny" and d["params"]["steps"] == 10
    lineage = artifacts.read_meta(tmp_path / "s").lineage
    assert lineage.method == "distill" and (lineage.parent or {}).get("digest") == artifacts.digest(lm)

    r = _json(
        run_cli(
            "compress",
            "report",
            str(lm),
            str(tmp_path / "q"),
            "--plots",
            str(tmp_path / "p"),
            "--runs",
            "1",
            "--json",
        )
    )
    assert [set(m) >= SIDE for m in r["models"]] == [True, True]
    assert (tmp_path / "p" / "latency.png").is_file()

    table = run_cli(
        "compress",
        "quantize",
        str(lm),
        "--method",
        "bf16",
        "--out",
        str(tmp_path / "h"),
        "--runs",
        "1",
        env={"COLUMNS": "200"},
    )
    assert table.returncode == 0, table.stderr
    assert (
        "bits_per_byte (validation, lower is better)" in table.stdout and "tokens/s, batch 16" in table.stdout
    )
    assert tree_digest(lm) == before


def test_flags_of_the_other_family_are_one_line_errors(lm: Path, tmp_path_factory: pytest.TempPathFactory):
    out = run_cli("compress", "distill", str(lm), "--hidden", "8")
    assert out.returncode != 0 and out.stderr.strip().count("\n") == 0
    assert "--hidden shapes an mlp student" in out.stderr
    out = run_cli("compress", "quantize", str(lm), "--method", "static")
    assert out.returncode != 0 and out.stderr.strip() == (
        "error: --method static does not apply to a language model (known: dynamic, fp16, bf16)"
    )
    mlp = trained(tmp_path_factory, "mlp", hidden=[8], epochs=1, dataset="breast_cancer")
    out = run_cli("compress", "distill", str(mlp), "--size", "mini")
    assert out.returncode != 0 and out.stderr.strip().count("\n") == 0
    assert "--size shapes a transformer student" in out.stderr
    out = run_cli("compress", "report", str(lm), str(mlp), "--plots", str(tmp_path_factory.mktemp("p") / "x"))
    assert out.returncode != 0 and "compared with language models only" in out.stderr
