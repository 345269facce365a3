"""A stop asked for by SIGTERM, kept until it is honoured.

``sigterm_unwinds()`` makes SIGTERM (kill, a scheduler's stop) unwind the main thread like Ctrl-C,
so that half-written folders are removed on the way out. Python cannot always deliver the
exception a signal handler raises: a handler that runs inside an import that a C extension guards
(``pa.array`` imports pandas lazily and drops what that import raises), a ``__del__`` or a weakref
callback loses it (printing "Exception ignored in ..." for the last two), and the command would go
on and publish its result. So the stop is recorded as well, that print is kept quiet, and
``check()`` raises it again where work must not go on after one: before a file or folder
is published (``bigmodel.fsutil``) and in long loops.

``exit_process(rc)`` ends a finished command without the interpreter's teardown, which native
thread pools (Arrow's) now and then turn into an abort.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import NoReturn

_requested: int | None = None  # the signal number of a stop not yet honoured


def check() -> None:
    """Raise ``SystemExit(128 + signal)`` if a stop was asked for; otherwise return at once."""
    if _requested is not None:
        raise SystemExit(128 + _requested)


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within this block (main thread only), SIGTERM prints one line and raises SystemExit(143)."""
    global _requested

    def stop(signum: int, _frame: object) -> None:
        global _requested
        _requested = signum
        # os.write, not print: the signal may land inside a print to stderr, whose buffered writer
        # refuses a reentrant call (RuntimeError) instead of unwinding
        os.write(2, f"interrupted by signal {signum}\n".encode())
        raise SystemExit(128 + signum)

    def quiet(unraisable: sys.UnraisableHookArgs) -> None:
        if isinstance(unraisable.exc_value, SystemExit) and _requested is not None:
            return  # the stop, dropped inside a __del__ or weakref callback: check() raises it again
        previous_hook(unraisable)

    previous, previous_hook = signal.signal(signal.SIGTERM, stop), sys.unraisablehook
    sys.unraisablehook = quiet
    try:
        yield
        check()  # a stop that Python dropped on the way still ends the command
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook
        _requested = None


def exit_process(rc: int) -> NoReturn:
    """End the process with ``rc``: Python's exit duties (atexit hooks, which also remove leftover
    temporary folders and join multiprocessing children; the std streams), then ``os._exit``.

    Why not ``sys.exit``: the interpreter's teardown then destroys what pyarrow's thread pools still
    reference, and one run in a few hundred aborts after its work is done ("terminate called
    without an active exception", SIGABRT, exit -6: apache/arrow#34314): a command that printed
    its result or its one-line error would still fail. The console script only; a library caller
    keeps its interpreter. A thread that Python's exit would wait for keeps the ordinary exit.
    """
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if any(t.is_alive() for t in others):
        sys.exit(rc)
    gc.collect()  # a file object left to the garbage collector is flushed and closed now
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`), a full disk: output was lost
            rc = rc or 120  # what Python's own exit returns then
    os._exit(rc)
