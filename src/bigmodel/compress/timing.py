"""Timing helpers shared by measurement and the int8 engines: thread pinning, ONNX Runtime sessions
made the way the server makes them, and interleaved latency runs.

They sit below both ``measure`` and ``int8`` so that neither has to import the other.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from bigmodel import onnxrt


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with PyTorch limited to ``n`` threads, then restore the old count."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def ort_session(path: str | Path, threads: int, disabled_optimizers: list[str] | None = None) -> Any:
    """An ONNX Runtime CPU session; ``disabled_optimizers`` as recorded in model.json's ``onnx``.
    Made the way the server makes it (int8 weights safe for this CPU, see bigmodel.onnxrt)."""
    return onnxrt.session(path, threads, disabled_optimizers)


def latencies(
    runners: Sequence[Callable[..., Any]],
    inputs: Sequence[tuple[Any, ...]],
    *,
    runs: int,
    budget_s: float = 20.0,
    rounds: int = 1,
    gap_s: float = 0.05,
) -> list[float]:
    """Median milliseconds per call of each runner on its inputs, runs interleaved round-robin.

    ``rounds > 1`` repeats the runs that many times, ``gap_s`` apart, and gives each runner its
    fastest round's median. On a shared machine the speed swings for tenths of a second at a time
    (a 10 us ONNX Runtime call measured 0.009 ms in one window, 0.014-0.020 ms in the next), so
    models measured at different moments (one trial after another) compare fairly only by the
    fastest window each saw. Stops early (after at least 5 runs) once ``budget_s`` seconds are spent."""
    for r, x in zip(runners, inputs, strict=True):
        for _ in range(min(3, runs)):  # warm-up: allocators, ORT's first-run planning
            r(*x)
    best = [float("inf")] * len(runners)
    start = time.perf_counter()
    for k in range(max(rounds, 1)):
        if k:
            time.sleep(gap_s)
        times: list[list[float]] = [[] for _ in runners]
        for i in range(max(runs, 1)):
            for t, r, x in zip(times, runners, inputs, strict=True):
                t0 = time.perf_counter()
                r(*x)
                t.append((time.perf_counter() - t0) * 1e3)
            if i >= 4 and time.perf_counter() - start > budget_s:
                break
        best = [min(b, statistics.median(t)) for b, t in zip(best, times, strict=True)]
        if time.perf_counter() - start > budget_s:
            break
    return best
