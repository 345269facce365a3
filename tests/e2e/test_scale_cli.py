"""The scale verbs as a user types them: text datasets, a transformer, consolidate, bad input."""

import json
from pathlib import Path

from tests.conftest import run_cli


def test_text_dataset_verbs_and_bad_input(tmp_path: Path):
    dst = tmp_path / "text"
    out = run_cli("data", "generate", "text", str(dst), "--bytes", "20000", "--context", "16", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["task"] == "lm" and summary["context"] == 16
    stats = run_cli("data", "stats", str(dst))
    assert stats.returncode == 0 and "lm" in stats.stdout
    bad = run_cli("data", "generate", "synthetic", str(tmp_path / "s"))
    assert bad.returncode == 2 and "--rows" in bad.stderr
    mlp = run_cli("train", "--dataset", str(dst), "--run-dir", str(tmp_path / "r"))
    assert mlp.returncode == 2 and "--model transformer" in mlp.stderr
    ignored = run_cli("train", "--dataset", str(dst), "--model", "transformer", "--hidden", "5")
    lines = ignored.stderr.strip().splitlines()
    assert ignored.returncode == 2 and len(lines) == 1
    assert "model.hidden does not apply to model transformer (its shape is set by model.size)" in lines[0]
    sized = run_cli("train", "--dataset", "digits", "--size", "tiny", "--run-dir", str(tmp_path / "sz"))
    assert sized.returncode == 2 and "--size applies to --model transformer" in sized.stderr  # was ignored
    mixed = run_cli("train", "--dataset", str(dst), "--set", "dist.mixed_precision=bf16")
    assert mixed.returncode == 2 and "needs dist.strategy=fsdp" in mixed.stderr
    none = run_cli("consolidate", str(tmp_path / "nowhere"), str(tmp_path / "m"))
    assert none.returncode == 2 and "not a run directory" in none.stderr
