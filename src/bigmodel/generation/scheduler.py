"""Continuous (iteration-level) batching: many sequences share each decode step of one model.

As in vLLM's scheduler and TGI's router, the scheduler decides before every step which sequences
run, and the engine just runs that batch. A worker thread loops: admit waiting requests into free
KV-cache slots (prefill each prompt, which also yields its first token), then run one decode step
for every running sequence and hand each its next token. A finished or cancelled sequence frees
its slot at that step, and a new request joins at the next one: nobody waits for a whole batch.

Requests are made and read on the asyncio event loop (``submit``, ``Request.chunks``); tokens
cross from the worker thread with ``call_soon_threadsafe``. Bounds: ``slots`` sequences run at
once (the KV cache is preallocated for them), ``max_waiting`` wait; past that ``submit`` raises
``QueueFull``, and a request that waits longer than ``timeout_s`` for a slot gets ``Timeout``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Protocol

from torch import nn

from bigmodel.generation.engine import Engine
from bigmodel.generation.generate import Chunk
from bigmodel.generation.params import GenerationParams
from bigmodel.generation.sampling import new_generator, sample
from bigmodel.generation.text import TextStream

log = logging.getLogger("bigmodel.serve")
PREFILL_TOKENS_PER_STEP = 1024  # prompts admitted between two decode steps, at least one


class QueueFull(Exception):
    """Every slot is busy and ``max_waiting`` requests already wait."""


class Timeout(Exception):
    """The request waited longer than its timeout for a free slot."""


class Cancelled(Exception):
    """The request was cancelled (its client went away) before it finished."""


class Failed(Exception):
    """Generation failed for this request (a bug or a broken model, not the client's input)."""


class Observer(Protocol):
    def first_token(self, seconds: float) -> None: ...  # from submit to the first token
    def next_token(self, seconds: float) -> None: ...  # between two tokens of one sequence


class _Quiet:
    def first_token(self, seconds: float) -> None:
        pass

    def next_token(self, seconds: float) -> None:
        pass


class Request:
    """One sequence in the scheduler. Read it with ``async for chunk in request.chunks()``."""

    def __init__(self, tokens: list[int], params: GenerationParams, budget: int, timeout_s: float):
        self.tokens, self.params, self.budget = tokens, params, budget
        self.gen = new_generator(params.seed)
        self.text = TextStream(params.stop)
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        self.slot = -1
        self.generated = 0
        self.last = 0  # the last token, input of the next decode step
        self.cancelled = False
        self.t_submit = self.t_last = time.perf_counter()
        self.deadline = self.t_submit + timeout_s

    @property
    def prompt_tokens(self) -> int:
        return len(self.tokens)

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Text as it is generated; the last chunk has ``finish_reason``. Raises what failed it."""
        while True:
            item = await self.events.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finish_reason is not None:
                return

    def _put(self, item: Chunk | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


class Scheduler:
    """Continuous batching over one language model (see the module docstring)."""

    def __init__(
        self,
        module: nn.Module,
        *,
        slots: int,
        max_waiting: int,
        timeout_s: float = 30.0,
        observer: Observer | None = None,
    ):
        self.engine = Engine(module, slots)
        self.context = self.engine.context
        self.max_waiting, self.timeout_s = max_waiting, timeout_s
        self.observer: Observer = observer or _Quiet()
        self._waiting: collections.deque[Request] = collections.deque()
        self._running: dict[int, Request] = {}
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="bigmodel-generate", daemon=True)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        self._thread.start()

    def submit(self, tokens: list[int], params: GenerationParams, timeout_s: float | None = None) -> Request:
        """Queue a prompt (on the event loop). ``BigModelError`` when it cannot fit the context,
        ``QueueFull`` when too many wait."""
        budget = params.budget(len(tokens), self.context)
        req = Request(tokens, params, budget, timeout_s or self.timeout_s)
        with self._cv:
            # requests that free slots will take at the next step do not count as waiting
            free = self.engine.slots - len(self._running)
            if len(self._waiting) >= self.max_waiting + free:
                raise QueueFull()
            self._waiting.append(req)
            self._cv.notify()
        return req

    def cancel(self, req: Request) -> None:
        """Stop generating for ``req`` (its client left): its slot frees at the next step."""
        req.cancelled = True
        with self._cv:
            self._cv.notify()

    async def stop(self) -> None:
        """Finish nothing more: fail what waits or runs, and end the worker thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        await asyncio.to_thread(self._thread.join)

    # ---- the worker thread ----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._waiting and not self._running:
                    self._cv.wait()
                if self._stopping:
                    break
                admitted = self._admit()
            try:
                self._step(admitted)
            except Exception as err:  # a model failure fails its sequences, never the server
                log.exception("generation step failed")
                for req in [*admitted, *self._running.values()]:
                    req._put(Failed(f"generation failed: {type(err).__name__}"))
                self._running.clear()
        for req in [*self._waiting, *self._running.values()]:
            req._put(Timeout("the server is shutting down"))
        self._waiting.clear()
        self._running.clear()

    def _admit(self) -> list[Request]:
        # under the lock: take waiting requests into the lowest free slots (the decode step runs
        # slots 0..max, so a compact range wastes nothing)
        now, budget = time.perf_counter(), PREFILL_TOKENS_PER_STEP
        admitted: list[Request] = []
        free = [s for s in range(self.engine.slots) if s not in self._running]
        while self._waiting and free:
            req = self._waiting[0]
            if req.cancelled:
                self._waiting.popleft()
                req._put(Cancelled())
                continue
            if now > req.deadline:
                self._waiting.popleft()
                req._put(Timeout())
                continue
            if admitted and budget < len(req.tokens):
                break
            self._waiting.popleft()
            req.slot = free.pop(0)
            budget -= len(req.tokens)
            admitted.append(req)
            self._running[req.slot] = req  # reserved now, so the next admit skips the slot
        return admitted

    def _step(self, admitted: list[Request]) -> None:
        for req in admitted:
            if self._emit(req, self.engine.prefill(req.slot, req.tokens)):
                del self._running[req.slot]
        for slot, req in list(self._running.items()):
            if req.cancelled:
                del self._running[slot]
                req._put(Cancelled())
        if not self._running:
            return
        rows = {s: (r.last, r.prompt_tokens + r.generated - 1) for s, r in self._running.items()}
        logits = self.engine.decode(rows)  # (n, V)
        for slot, req in list(self._running.items()):
            if self._emit(req, logits[slot]):
                del self._running[slot]

    def _emit(self, req: Request, logits: object) -> bool:
        """Sample ``req``'s next token, send the text it completes; True when ``req`` is done."""
        try:
            tok = sample(logits, req.params, req.gen)  # type: ignore[arg-type]
        except Exception as err:  # fails this sequence only; the others in the batch go on
            log.error("sampling failed for one sequence: %s", err)
            req._put(Failed(f"generation failed: {err}"))
            return True
        req.generated += 1
        req.last = tok
        now = time.perf_counter()
        if req.generated == 1:
            self.observer.first_token(now - req.t_submit)
        else:
            self.observer.next_token(now - req.t_last)
        req.t_last = now
        piece = req.text.push(tok)
        finish = "stop" if req.text.stopped else "length" if req.generated >= req.budget else None
        if finish == "length":
            piece += req.text.finish()
        if piece or finish:
            req._put(Chunk(piece, req.generated, finish))
        if finish is None and req.cancelled:  # its client left while this step ran
            req._put(Cancelled())
            return True
        return finish is not None
