"""compress.timing.latencies: interleaved medians, and with rounds the fastest round's."""

from __future__ import annotations

import time

from bigmodel.compress.timing import latencies


class Swinging:
    """A call that costs ``slow_s`` during its first ``slow_calls`` calls, then ``fast_s``: a
    model measured while a neighbour held the core, then after."""

    def __init__(self, slow_calls: int, slow_s: float, fast_s: float) -> None:
        self.calls, self.slow_calls, self.slow_s, self.fast_s = 0, slow_calls, slow_s, fast_s

    def __call__(self) -> None:
        self.calls += 1
        cost = self.slow_s if self.calls <= self.slow_calls else self.fast_s
        end = time.perf_counter() + cost
        while time.perf_counter() < end:
            pass


def test_one_round_is_the_median_of_every_run() -> None:
    # warm-up (3) and all 20 runs fall in the slow window
    (ms,) = latencies([Swinging(100, 0.004, 0.0005)], [()], runs=20)
    assert 3.5 < ms < 10


def test_rounds_give_each_runner_its_fastest_round() -> None:
    # the first round (after 3 warm-up calls) is slow, the later ones fast
    slow_then_fast = Swinging(3 + 20, 0.004, 0.0005)
    steady = Swinging(0, 0.0, 0.002)
    ms, steady_ms = latencies([slow_then_fast, steady], [(), ()], runs=20, rounds=3, gap_s=0.0)
    assert slow_then_fast.calls == steady.calls == 3 + 3 * 20
    assert ms < 1.5  # 0.5 ms, not the slow round's 4 ms
    assert 1.9 < steady_ms < 6  # a steady model's figure is its cost


def test_rounds_stop_at_the_budget() -> None:
    r = Swinging(0, 0.0, 0.01)
    latencies([r], [()], runs=10, rounds=50, gap_s=0.0, budget_s=0.2)
    assert r.calls < 3 + 50 * 10  # ~0.2 s of 10 ms calls, then no further round
