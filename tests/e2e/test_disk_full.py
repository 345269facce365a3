"""A full disk during training is one line naming the path and the cause, and leaves nothing half
written that a resume would trust (issue 22: it was "worker 0 failed: To enable traceback see ...",
and a resume on the still-full disk a traceback). Runs on a small tmpfs, so it needs root to mount
one (CI runs as root); elsewhere it is skipped and says why."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def test_a_checkpoint_that_does_not_fit_is_one_line_and_leaves_nothing(small_disk: Path):
    run = small_disk / "run"  # 2 workers, Adam: a checkpoint of this MLP needs ~3.6 MB
    proc = run_cli(
        "train", "--dataset", "digits", "--hidden", "512,512", "--epochs", "2", "--workers", "2",
        "--run-dir", str(run), "--checkpoint-every", "5", "--no-progress",
    )  # fmt: skip
    line = _one_line(proc)
    assert f"cannot write checkpoint {run}/checkpoints/step-" in line and "No space left on device" in line
    assert list((run / "checkpoints").iterdir()) == []  # no half-written checkpoint to resume from


def test_a_resume_on_a_full_disk_is_one_line_and_keeps_the_run(small_disk: Path):
    run = small_disk / "run"
    first = run_cli("train", "--dataset", "digits", "--hidden", "32", "--epochs", "1", "--run-dir", str(run))
    assert first.returncode == 0, first.stderr
    config = (run / "config.yaml").read_bytes()
    try:  # fill what is left
        with open(small_disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
    except OSError:
        pass
    line = _one_line(run_cli("train", "--resume", "--run-dir", str(run), "--epochs", "2", "--no-progress"))
    assert "No space left on device" in line and str(run) in line
    assert (run / "config.yaml").read_bytes() == config  # written atomically: the old one is whole
    (small_disk / "filler").unlink()
    assert (
        run_cli("train", "--resume", "--run-dir", str(run), "--epochs", "2", "--no-progress").returncode == 0
    )
