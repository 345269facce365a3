import os
import stat
from pathlib import Path

import pytest

from bigmodel.fsutil import atomic_dir, write_json_atomic


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_and_folders_get_the_modes_the_umask_gives(tmp_path: Path, umask: int):
    """Not the private 0600/0700 of mkstemp/mkdtemp: a dataset or model is read by other users."""
    old = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "d") as tmp:
            write_json_atomic(tmp / "manifest.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "d" / "manifest.json").stat().st_mode) == 0o666 & ~umask


def test_a_destination_that_cannot_be_created_is_one_line() -> None:
    from bigmodel.errors import BigModelError

    with (
        pytest.raises(BigModelError, match=r"cannot create /proc/bigmodel-x: "),
        atomic_dir("/proc/bigmodel-x"),
    ):
        pass


def test_a_killed_process_s_temporary_folder_is_removed_by_the_next_writer(tmp_path: Path):
    """SIGKILL leaves ``.DST.<pid>@<host>~xxxx.tmp``; the next atomic_dir for DST removes it when that
    process is gone, and leaves a running process's folder and another machine's alone."""
    import socket
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead, host = int(done.stdout), socket.gethostname()
    stale = tmp_path / f".out.{dead}@{host}~abc123.tmp"
    live = tmp_path / f".out.{os.getpid()}@{host}~def456.tmp"
    remote = tmp_path / f".out.{dead}@another-host~ghi789.tmp"
    other = tmp_path / f".other.{dead}@{host}~jkl012.tmp"
    for d in (stale, live, remote, other):
        (d / "train").mkdir(parents=True)
    with atomic_dir(tmp_path / "out") as tmp:
        assert tmp.name.startswith(f".out.{os.getpid()}@{host}~")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", live.name, remote.name, other.name])
