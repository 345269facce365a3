"""Drift detectors on an error stream: ADWIN and Page-Hinkley, each fed one value per labelled row.

Both follow River's conventions (``update(x)`` then ``drift_detected``; the same defaults) so they
can be checked against it; River itself is not needed at run time.

ADWIN (Bifet & Gavaldà 2007) keeps a window of recent values and drops its older part whenever
some split into an older and a newer sub-window has means further apart than

    eps = sqrt(2 m var ln(2 ln(n) / delta)) + 2/3 m ln(2 ln(n) / delta),
    m = 1/(n0 - L + 1) + 1/(n1 - L + 1)

(MOA's and River's bound; n the window size, var its variance, L the minimum sub-window length).
This version keeps at most ``max_window`` values (bounded memory) instead of exponential
histograms, and checks every ``clock`` values all splits at multiples of ``clock``, vectorised.

Page-Hinkley (Page 1954) accumulates deviations from the running mean, minus ``delta`` (up) or
plus ``delta`` (down), with forgetting factor ``alpha``, and signals when either cumulative sum
departs from its extreme by more than ``threshold``; it then starts afresh.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

import numpy as np

DetectorName = Literal["adwin", "page_hinkley"]


class ADWIN:
    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        min_window_length: int = 5,
        grace_period: int = 10,
        max_window: int = 8192,
    ):
        self.delta, self.clock, self.min_len = delta, clock, min_window_length
        self.grace, self.max_window = grace_period, max_window
        self.window: deque[float] = deque(maxlen=max_window)
        self.drift_detected = False
        self.n_detections = 0
        self._tick = 0

    def update(self, x: float) -> None:
        self.window.append(float(x))
        self._tick += 1
        self.drift_detected = False
        if self._tick % self.clock or len(self.window) < max(self.grace, 2 * self.min_len):
            return
        while self._cut():  # keep dropping the stale part while some split still differs
            self.drift_detected = True
        if self.drift_detected:
            self.n_detections += 1

    def _cut(self) -> bool:
        w = np.fromiter(self.window, dtype=np.float64, count=len(self.window))  # (n,)
        n = len(w)
        s = np.cumsum(w)
        n0 = np.arange(self.clock, n, self.clock)  # older sub-window sizes: splits every `clock`
        n0 = n0[(n0 >= self.min_len) & (n - n0 >= self.min_len)]
        if len(n0) == 0:
            return False
        n1 = n - n0
        mean0, mean1 = s[n0 - 1] / n0, (s[-1] - s[n0 - 1]) / n1
        dd = math.log(2 * math.log(n) / self.delta)
        m = 1 / (n0 - self.min_len + 1) + 1 / (n1 - self.min_len + 1)
        eps = np.sqrt(2 * m * w.var() * dd) + 2 / 3 * dd * m
        hit = np.flatnonzero(np.abs(mean0 - mean1) > eps)
        if len(hit) == 0:
            return False
        for _ in range(int(n0[hit[-1]])):  # drop the older part at the latest significant split
            self.window.popleft()
        return True

    @property
    def width(self) -> int:
        return len(self.window)

    @property
    def estimation(self) -> float:
        return sum(self.window) / len(self.window) if self.window else 0.0


class PageHinkley:
    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: Literal["up", "down", "both"] = "both",
    ):
        self.min_instances, self.delta, self.threshold = min_instances, delta, threshold
        self.alpha, self.mode = alpha, mode
        self.drift_detected = False
        self.n_detections = 0
        self._reset()

    def _reset(self) -> None:
        self.n, self.mean = 0, 0.0
        self.sum_up, self.sum_down = 0.0, 0.0
        self.min_up, self.max_down = math.inf, -1.0

    def update(self, x: float) -> None:
        if self.drift_detected:
            self._reset()
        self.n += 1
        self.mean += (x - self.mean) / self.n
        dev = x - self.mean
        self.sum_up = self.alpha * self.sum_up + dev - self.delta
        self.sum_down = self.alpha * self.sum_down + dev + self.delta
        self.min_up = min(self.min_up, self.sum_up)
        self.max_down = max(self.max_down, self.sum_down)
        self.drift_detected = False
        if self.n >= self.min_instances:
            up = self.sum_up - self.min_up > self.threshold
            down = self.max_down - self.sum_down > self.threshold
            self.drift_detected = {"up": up, "down": down, "both": up or down}[self.mode]
        if self.drift_detected:
            self.n_detections += 1


Detector = ADWIN | PageHinkley
