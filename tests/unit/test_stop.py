"""SIGTERM ends a command even when Python drops the SystemExit its handler raised."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from bigmodel import stop
from bigmodel.fsutil import atomic_dir, write_text_atomic


def _dropped_sigterm() -> None:
    """SIGTERM to this process, its SystemExit lost as it is when the handler runs inside an import
    that pyarrow guards (``pa.array`` importing pandas), a ``__del__`` or a weakref callback."""
    with contextlib.suppress(SystemExit):
        signal.raise_signal(signal.SIGTERM)


def test_a_dropped_stop_publishes_no_folder_and_no_file(tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exc, stop.sigterm_unwinds(), atomic_dir(tmp_path / "dataset") as tmp:
        (tmp / "part-0.parquet").write_bytes(b"half")
        _dropped_sigterm()
        (tmp / "part-1.parquet").write_bytes(b"written after the stop")
    assert exc.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []  # not published, temporary folder removed
    assert "interrupted by signal 15" in capfd.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler and the stop end with the block
    stop.check()

    with pytest.raises(SystemExit), stop.sigterm_unwinds():
        _dropped_sigterm()
        write_text_atomic(tmp_path / "model.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_a_stop_dropped_in_a_weakref_callback_exits_without_a_traceback(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    """importlib's module locks die through weakref callbacks: a SIGTERM handled in one was printed
    as "Exception ignored in ... Traceback" and dropped."""
    printed: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: printed.append(u.exc_value))

    class Lock:
        pass

    lock = Lock()
    weakref.finalize(lock, signal.raise_signal, signal.SIGTERM)
    with pytest.raises(SystemExit) as exc, stop.sigterm_unwinds():
        del lock  # the callback runs here; the handler's SystemExit cannot leave it
    assert exc.value.code == 143
    assert "interrupted by signal 15" in capfd.readouterr().err
    assert printed == []  # Python's "Exception ignored" print was not reached
    weakref.finalize(Lock(), lambda: 1 / 0)  # other unraisable errors still reach the hook after
    assert len(printed) == 1 and isinstance(printed[0], ZeroDivisionError)


def test_without_a_stop_the_block_runs_and_publishes(tmp_path: Path):
    with stop.sigterm_unwinds(), atomic_dir(tmp_path / "dataset") as tmp:
        (tmp / "part-0.parquet").write_bytes(b"whole")
    assert (tmp_path / "dataset" / "part-0.parquet").read_bytes() == b"whole"


_EXITING = """
import atexit, sys, tempfile, threading, time
from bigmodel.stop import exit_process

class Teardown:
    def __del__(self):
        print("torn down", file=sys.stderr)  # runs only in the interpreter's teardown

kept = Teardown()
atexit.register(print, "atexit ran")
left = tempfile.TemporaryDirectory()  # removed by its atexit finalizer
print(left.name)
print("result", end="")  # no newline: still in the buffer at exit
if sys.argv[1] == "thread":
    threading.Thread(target=lambda: (time.sleep(1), print("thread finished", file=sys.stderr))).start()
exit_process(3)
"""


def test_exit_process_fails_when_the_output_cannot_be_written():
    script = (
        "import sys; from bigmodel.stop import exit_process; print('result'); exit_process(int(sys.argv[1]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # the result stays in the buffer
    for rc, expected in ((0, 120), (3, 3)):
        with open("/dev/full", "w") as full:  # every write: ENOSPC
            out = subprocess.run([sys.executable, "-c", script, str(rc)], stdout=full, env=env, timeout=60)
        # "done" with its result lost is a failure, as Python's own exit has it; an error keeps its code
        assert out.returncode == expected


@pytest.mark.parametrize("case", ["plain", "thread"])
def test_exit_process_runs_exit_duties_but_not_the_teardown(case: str):
    out = subprocess.run([sys.executable, "-c", _EXITING, case], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    left, printed = out.stdout.splitlines()
    assert printed == "resultatexit ran"  # the hooks ran and the buffered output was flushed
    assert not Path(left).exists()
    # No teardown (where Arrow's pools abort a process now and then), unless a non-daemon thread
    # may still be running: then Python's own exit, which waits for it.
    assert ("torn down" in out.stderr) == (case == "thread")
    assert ("thread finished" in out.stderr) == (case == "thread")
