"""``background(items, depth)``: produce an iterable's items in a thread, ``depth`` ahead.

The streaming reader chains two of these (read, then assemble) so that Parquet decoding, the
shuffle gather and the training step overlap: Arrow and numpy release the GIL while they work.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

_DONE = object()


def background(items: Iterable[T], depth: int) -> Pipeline[T]:
    """Produce ``items`` in a daemon thread, ``depth`` ahead (Parquet decoding and numpy gathers
    release the GIL, so reading overlaps with the training step). The thread starts now, not at the
    first ``next``: a pipeline made before the model is built reads while the model is built."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as err:  # handed to the consumer, which re-raises it
            put(err)
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # a generator stage upstream stops its own thread now, too
                close()

    thread = threading.Thread(target=produce, daemon=True, name="bigmodel-prefetch")
    thread.start()
    out: Pipeline[T] = Pipeline(q, stop, thread)
    weakref.finalize(out, stop.set)  # dropped without being closed: the thread still stops
    return out


class Pipeline(Generic[T]):
    """The consuming end of ``background``. ``close`` stops the producer thread and waits for it to
    leave Arrow, read from or not: a daemon thread still decoding when the interpreter exits aborts
    the process ("terminate called without an active exception")."""

    def __init__(self, q: queue.Queue[object], stop: threading.Event, thread: threading.Thread):
        self.q, self.stop, self.thread = q, stop, thread

    def __iter__(self) -> Pipeline[T]:
        return self

    def __next__(self) -> T:
        item = _DONE if self.stop.is_set() else self.q.get()
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item  # type: ignore[return-value]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
