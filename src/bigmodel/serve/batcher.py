"""Dynamic batching: requests from many clients merged into one forward pass.

Each model version has one ``Batcher``. ``submit`` puts a request's rows on a bounded queue and
returns a future; one task takes queued requests, oldest first, until ``max_batch_size`` rows
(waiting up to ``max_delay_s`` after the oldest for more to arrive), runs the model once on the
concatenated rows and hands each request its own slice of every output.

With no delay the batch is whatever queued while the previous forward ran: under load batches
grow by themselves, alone a request runs at once. A forward that costs more than a thread hop
runs on a worker thread so the event loop keeps reading requests meanwhile; a short one runs
inline, where a hop would cost more than it saves.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

Outputs = dict[str, np.ndarray]
INLINE_BELOW_S = 0.001  # forwards cheaper than this (CPU seconds) run on the event loop


class QueueFull(Exception):
    pass


class Timeout(Exception):
    pass


class _Item:
    __slots__ = ("fut", "rows", "t", "timer", "x")

    def __init__(self, x: np.ndarray, fut: asyncio.Future[Any], t: float):
        self.x, self.fut, self.t, self.rows = x, fut, t, len(x)
        self.timer: asyncio.TimerHandle | None = None


class Batcher:
    def __init__(
        self,
        predict: Callable[[np.ndarray], Outputs],
        *,
        max_batch_size: int,
        max_delay_s: float = 0.0,
        max_queue: int = 256,
        on_batch: Callable[[int], None] | None = None,
        forward_s: float = 0.0,
    ):
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.on_batch = on_batch or (lambda rows: None)
        self._queue: collections.deque[_Item] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # moving average of one forward's CPU time; seeded from the warm-up, so a slow model's first
        # batch already runs off the event loop
        self._forward_s = forward_s
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bigmodel-forward")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, x: np.ndarray, timeout_s: float) -> asyncio.Future[tuple[Outputs, float]]:
        """Queue (B, F) rows; the future gives ``(outputs for these rows, seconds queued)``."""
        if len(self._queue) >= self.max_queue:
            raise QueueFull()
        loop = asyncio.get_running_loop()
        item = _Item(x, loop.create_future(), loop.time())
        item.timer = loop.call_at(item.t + timeout_s, self._expire, item)
        self._queue.append(item)
        self._idle.clear()
        self._wake.set()
        return item.fut

    def _expire(self, item: _Item) -> None:
        if not item.fut.done():
            item.fut.set_exception(Timeout())
        # frees its slot (and rows) at once; a forward already under way just drops its answer
        with contextlib.suppress(ValueError):
            self._queue.remove(item)

    async def drain(self) -> None:
        """Wait until every queued request has been answered."""
        await self._idle.wait()

    async def stop(self) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._pool.shutdown(wait=False)

    def _timed(self, x: np.ndarray) -> tuple[Outputs, float]:
        # CPU time of this thread, not wall time: a busy machine must not push short forwards
        # onto the thread pool just because this process was descheduled for a while
        t0 = time.thread_time()
        out = self.predict(x)
        return out, time.thread_time() - t0

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        q = self._queue
        while q:
            item = q[0]
            if item.fut.done():  # timed out while queued: nobody waits for it
                q.popleft()
                continue
            if batch and rows + item.rows > self.max_batch_size:
                break
            q.popleft()
            batch.append(item)
            rows += item.rows
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            if self.max_delay_s > 0:
                deadline = self._queue[0].t + self.max_delay_s
                while sum(i.rows for i in self._queue) < self.max_batch_size and loop.time() < deadline:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), deadline - loop.time())
                    except asyncio.TimeoutError:
                        break
            else:
                # one turn of the loop lets requests that already arrived join this batch
                await asyncio.sleep(0)
            batch = self._take()
            if not batch:
                continue
            start = loop.time()
            x = np.concatenate([i.x for i in batch]) if len(batch) > 1 else batch[0].x.copy()
            try:
                if self._forward_s < INLINE_BELOW_S:
                    out, cpu = self._timed(x)
                else:
                    out, cpu = await loop.run_in_executor(self._pool, self._timed, x)
                self._forward_s = 0.8 * self._forward_s + 0.2 * cpu
            except Exception as err:  # a model failure fails this batch's requests, not the server
                for i in batch:
                    if i.timer:
                        i.timer.cancel()
                    if not i.fut.done():
                        i.fut.set_exception(err)
                continue
            self.on_batch(len(x))
            off = 0
            for i in batch:
                if i.timer:
                    i.timer.cancel()
                if not i.fut.done():
                    i.fut.set_result(({k: v[off : off + i.rows] for k, v in out.items()}, start - i.t))
                off += i.rows
