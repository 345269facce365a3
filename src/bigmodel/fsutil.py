"""Atomic writes and content hashes: nothing half-written is ever trusted later."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bigmodel.errors import BigModelError
from bigmodel.stop import check as check_stop

M = TypeVar("M", bound=BaseModel)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in bounded chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def make_dir(path: str | os.PathLike[str], what: str = "folder") -> Path:
    """``mkdir -p``, with a one-line error naming ``what`` and the path when it cannot be made
    (a file in the way, no permission) instead of an OSError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise BigModelError(f"cannot create {what} {path}: a file is in the way") from None
    except OSError as err:
        raise BigModelError(f"cannot create {what} {path}: {err.strerror or err}") from None
    return path


def fresh_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Make ``path`` for a new run's outputs. It may already exist only as an empty folder: a run
    never writes into a folder that holds files, the user's or another run's."""
    path = Path(path)
    if path.is_dir() and (names := sorted(p.name for p in path.iterdir())):
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise BigModelError(
            f"{what} {path} is not empty ({shown}); choose a new or empty folder (nothing was overwritten)"
        )
    return make_dir(path, what)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    """The process's umask (os has no getter: set it and at once set it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dst: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dst``; on success it is fsynced and renamed over ``dst``.

    On error the temporary file is removed and ``dst`` is left as it was.
    """
    dst = Path(dst)
    make_dir(dst.parent)
    if dst.is_dir():
        raise BigModelError(f"{dst} is a folder; give a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    except OSError as err:
        raise BigModelError(f"cannot write {dst}: {err.strerror}") from None
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make every file private to its writer
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        check_stop()  # a process asked to stop publishes nothing, even if its exit was dropped
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, dst)
        _fsync_dir(dst.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes_atomic(dst: str | os.PathLike[str], data: bytes) -> None:
    try:
        with atomic_path(dst) as tmp:
            tmp.write_bytes(data)
    except OSError as err:  # e.g. a full disk: the old file is still there, whole
        raise BigModelError(f"cannot write {dst}: {err.strerror or err}") from None


def write_text_atomic(dst: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(dst, text.encode())


def write_json_atomic(dst: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(dst, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _owner() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _remove_orphans(dst: Path) -> None:
    """Remove the temporary folders of ``dst`` that a killed process of this machine left behind
    (SIGKILL, a lost power supply: nothing ran to remove them). A folder is named for its process
    and machine; one whose process still runs, or of another machine (a shared file system), stays."""
    pattern = re.compile(rf"\.{re.escape(dst.name)}\.(\d+)@(.+)~[^/]*\.tmp")
    host = socket.gethostname()
    with contextlib.suppress(OSError):
        for entry in os.scandir(dst.parent):
            m = pattern.fullmatch(entry.name)
            if m and m.group(2) == host and not _running(int(m.group(1))):
                shutil.rmtree(entry.path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def atomic_dir(dst: str | os.PathLike[str], *, exist_ok: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it to ``dst`` when complete.

    If ``dst`` already exists: with ``exist_ok`` the new copy is discarded (another process won a
    race to build the same thing), otherwise ``FileExistsError`` is raised and nothing is touched.
    """
    dst = Path(dst)
    make_dir(dst.parent)
    if dst.exists() and not exist_ok:
        raise FileExistsError(str(dst))
    _remove_orphans(dst)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.{_owner()}~", suffix=".tmp", dir=dst.parent))
    except OSError as err:  # e.g. a read-only or virtual parent such as /proc
        raise BigModelError(f"cannot create {dst}: {err.strerror}") from None
    os.chmod(tmp, 0o777 & ~_umask())  # as mkdir would make it, not mkdtemp's private 0700
    try:
        yield tmp
        check_stop()
        try:
            os.rename(tmp, dst)  # fails if dst exists and is non-empty: never overwrite
        except OSError:
            if not (exist_ok and dst.exists()):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        _fsync_dir(dst.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json_as(path: str | os.PathLike[str], model: type[M], *, missing: str, fmt: str | None = None) -> M:
    """``path`` read as JSON and validated as ``model``; one-line errors that name the file and the
    bad key. ``missing`` is the error when the file does not exist; ``fmt`` the required ``format``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BigModelError(missing) from None
    except (OSError, json.JSONDecodeError) as err:
        raise BigModelError(f"cannot read {path}: {err}") from None
    try:
        obj = model.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        if not e["loc"]:  # a rule across keys
            raise BigModelError(f"{path}: {e['msg'].removeprefix('Value error, ')}") from None
        raise BigModelError(f"{path}: bad key '{'.'.join(map(str, e['loc']))}': {e['msg']}") from None
    found = getattr(obj, "format", fmt)
    if fmt is not None and found != fmt:
        raise BigModelError(f"{path}: unsupported format {found!r} (expected {fmt})")
    return obj
