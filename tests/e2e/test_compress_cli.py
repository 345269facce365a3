"""``bigmodel compress`` as a user runs it: real processes, distributed fine-tuning, --json results."""

import json
from pathlib import Path

import pytest

from bigmodel import artifacts
from tests.compress_helpers import trained, tree_digest
from tests.conftest import run_cli

SIDE = {"params", "file_bytes", "latency_ms_b1", "latency_ms_b64", "metric"}


def _json(out) -> dict:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained(tmp_path_factory, "e2e", hidden=[128, 64], epochs=5)


def test_prune_quantize_distill_cli(model: Path, tmp_path: Path):
    before = tree_digest(model)
    pruned = _json(
        run_cli(
            "compress",
            "prune",
            str(model),
            "--sparsity",
            "0.8",
            "--finetune-epochs",
            "2",
            "--steps",
            "1",
            "--workers",
            "2",
            "--out",
            str(tmp_path / "p"),
            "--runs",
            "5",
            "--json",
        )
    )
    assert set(pruned["original"]) >= SIDE and set(pruned["compressed"]) >= SIDE
    assert pruned["ratios"]["file_bytes"] > 2.5 and pruned["ratios"]["metric_delta"] > -0.05
    assert pruned["params"]["workers"] == 2 and pruned["params"]["measured_sparsity"] == pytest.approx(
        0.8, abs=1e-3
    )

    q = _json(
        run_cli(
            "compress",
            "quantize",
            str(tmp_path / "p"),
            "--out",
            str(tmp_path / "pq"),
            "--runs",
            "5",
            "--json",
        )
    )
    assert q["compressed"]["runtime"] == "onnxruntime" and q["ratios"]["metric_delta"] > -0.02
    assert artifacts.read_meta(tmp_path / "pq").lineage.parent["path"] == str((tmp_path / "p").resolve())

    d = _json(
        run_cli(
            "compress",
            "distill",
            str(model),
            "--hidden",
            "16",
            "--epochs",
            "6",
            "--lr",
            "0.01",
            "--out",
            str(tmp_path / "d"),
            "--runs",
            "5",
            "--json",
        )
    )
    assert d["compressed"]["params"] < 0.1 * d["original"]["params"] and d["compressed"]["metric"] > 0.8
    assert artifacts.read_meta(tmp_path / "d").lineage.method == "distill"

    table = run_cli(
        "compress",
        "report",
        str(model),
        str(tmp_path / "p"),
        str(tmp_path / "pq"),
        str(tmp_path / "d"),
        "--plots",
        str(tmp_path / "plots"),
        "--runs",
        "5",
    )
    assert table.returncode == 0 and "side by side" in table.stdout
    assert (tmp_path / "plots" / "size.png").is_file()
    assert tree_digest(model) == before


def test_bad_sparsity_from_the_shell(model: Path):
    before = tree_digest(model)
    out = run_cli("compress", "prune", str(model), "--sparsity", "1.5")
    assert out.returncode == 2 and out.stderr.strip() == "error: --sparsity must be in [0, 1), got 1.5"
    assert tree_digest(model) == before
