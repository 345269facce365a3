"""Who may write into a run directory: new runs only into a new or empty folder, and a new run
that fails at the start leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from bigmodel.errors import BigModelError
from bigmodel.fsutil import fresh_dir, make_dir
from bigmodel.train.loop import CONFIG_FILE, _forget_failed_start


def test_fresh_dir_takes_a_new_or_empty_folder_only(tmp_path: Path) -> None:
    assert fresh_dir(tmp_path / "a" / "b", "run directory").is_dir()
    assert fresh_dir(tmp_path / "a" / "b", "run directory").is_dir()  # still empty: fine
    (tmp_path / "a" / "b" / "notes.txt").write_text("mine")
    with pytest.raises(BigModelError, match=r"run directory .*/b is not empty \(notes.txt\)"):
        fresh_dir(tmp_path / "a" / "b", "run directory")
    assert (tmp_path / "a" / "b" / "notes.txt").read_text() == "mine"


def test_make_dir_names_the_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    for target in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(BigModelError, match=f"cannot create registry {target}: a file is in the way"):
            make_dir(target, "registry")


def test_a_failed_start_leaves_no_folder_but_a_started_run_keeps_its_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_FILE).write_text("seed: 0\n")
    _forget_failed_start(run)
    assert not run.exists()
    run.mkdir()
    (run / CONFIG_FILE).write_text("seed: 0\n")
    (run / "metrics.jsonl").write_text("{}\n")
    _forget_failed_start(run)
    assert sorted(p.name for p in run.iterdir()) == [CONFIG_FILE, "metrics.jsonl"]
