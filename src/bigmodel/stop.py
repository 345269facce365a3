"""A stop asked for by SIGTERM, kept until it is honoured.

``sigterm_unwinds()`` makes SIGTERM (kill, a scheduler's stop) unwind the main thread like Ctrl-C,
so that half-written folders are removed on the way out. Python cannot always deliver the
exception a signal handler raises: a handler that runs inside an import that a C extension guards
(``pa.array`` imports pandas lazily and drops what that import raises), a ``__del__`` or a weakref
callback loses it (printing "Exception ignored in ..." for the last two), and the command would go
on and publish its result. So the stop is recorded as well, that print is kept quiet, and
``check()`` raises it again where work must not go on after one: before a file or folder
is published (``bigmodel.fsutil``) and in long loops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

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
