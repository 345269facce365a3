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
