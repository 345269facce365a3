"""A run killed with SIGKILL mid-epoch resumes to the same final weights as an uninterrupted run."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from bigmodel import generate_synthetic
from tests.conftest import BIN, ROOT, run_cli


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume") / "synth"
    generate_synthetic(root, rows=20000, features=16, seed=2)
    return root


def _args(data: Path, run_dir: Path, workers: int) -> list[str]:
    # 16,000 train rows / 64 = 250 steps per epoch; the checkpoint at step 300 lands mid-epoch 1
    return [
        "train",
        "--dataset",
        str(data),
        "--run-dir",
        str(run_dir),
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--momentum",
        "0.9",
        "--batch-size",
        "64",
        "--epochs",
        "2",
        "--hidden",
        "64,32",
        "--workers",
        str(workers),
        "--checkpoint-every",
        "100",
        "--set",
        "model.dropout=0.1",
        "--no-progress",
    ]


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2: ~35 s, make test-slow
def test_sigkill_then_resume_matches_uninterrupted(data: Path, tmp_path: Path, workers: int):
    ref = run_cli(*_args(data, tmp_path / "ref", workers))
    assert ref.returncode == 0, ref.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [str(BIN / "bigmodel"), *_args(data, killed, workers)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while not any((killed / "checkpoints").glob("step-0000003*")) and time.time() < deadline:
        assert proc.poll() is None, "run finished before it could be killed"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every worker, mid-epoch 1
    proc.wait()
    assert not (killed / "model.json").exists()

    res = run_cli(*_args(data, killed, workers), "--resume", "--json")
    assert res.returncode == 0, res.stderr
    a, b = (
        load_file(str(tmp_path / "ref" / "model.safetensors")),
        load_file(str(killed / "model.safetensors")),
    )
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # each epoch logged once despite the kill


def test_half_written_checkpoint_is_not_trusted(data: Path, tmp_path: Path):
    run = tmp_path / "r"
    out = run_cli(*_args(data, run, 1)[:-1], "--epochs", "1", "--no-progress")
    assert out.returncode == 0, out.stderr
    newest = sorted((run / "checkpoints").glob("step-*"))[-1]
    next((newest / "shards").glob("*.safetensors")).write_bytes(b"truncated")  # corrupt the newest
    # a leftover temporary checkpoint from a killed writer is ignored as well
    (run / "checkpoints" / ".step-999999999-00009.tmp").mkdir()
    from bigmodel.training import checkpoint

    found = checkpoint.latest(run)
    assert found is not None and found[0] != newest
    res = run_cli(*_args(data, run, 1)[:-1], "--epochs", "2", "--no-progress", "--resume")
    assert res.returncode == 0, res.stderr
    assert f"warning: {newest.name} failed the hash check" in res.stderr
    assert f"resuming from {found[0].name}" in res.stderr
