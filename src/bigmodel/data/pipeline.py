"""``ordered_map(fn, items, workers, depth)``: ``fn`` of each item, in threads, handed out in order.

The streaming reader loads its windows (Parquet decoding, then the shuffle gather) this way, so that
windows load side by side and ahead of the training step: Arrow and numpy release the GIL while they
work.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, depth: int) -> OrderedMap[R]:
    """``fn`` of each item, computed by ``workers`` threads, handed out in the items' order, with up
    to ``workers + depth`` items taken ahead. It starts now: the first items are being computed when
    this returns."""
    return OrderedMap(fn, iter(items), workers, depth)


class OrderedMap(Generic[R]):
    """The consuming end of ``ordered_map``. The consumer itself tops up the work as it takes
    results, so no relay thread competes with the workers for the GIL and the cores. ``close``
    cancels what has not started and waits for what has (a thread still in Arrow when the
    interpreter exits aborts the process); dropped without ``close``, it still cancels."""

    def __init__(self, fn: Callable[[T], R], items: Iterator[T], workers: int, depth: int):
        self.fn, self.items, self.ahead = fn, items, max(workers, 1) + max(depth, 0)
        self.pool = ThreadPoolExecutor(max(workers, 1), thread_name_prefix="bigmodel-load")
        self.running: deque[Future[R]] = deque()
        self.exhausted = False
        self._top_up()
        weakref.finalize(self, self.pool.shutdown, wait=False, cancel_futures=True)

    def _top_up(self) -> None:
        while not self.exhausted and len(self.running) < self.ahead:
            item = next(self.items, _DONE)
            if item is _DONE:
                self.exhausted = True  # what runs is still handed out
                break
            self.running.append(self.pool.submit(self.fn, item))  # type: ignore[arg-type]

    def __iter__(self) -> OrderedMap[R]:
        return self

    def __next__(self) -> R:
        if not self.running:
            self.close()
            raise StopIteration
        try:
            out = self.running.popleft().result()
            self._top_up()
        except BaseException:
            self.close()
            raise
        return out

    def close(self) -> None:
        self.exhausted = True
        self.running.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)
