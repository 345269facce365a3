"""How many torch threads a CPU worker takes: the config, then OMP_NUM_THREADS, then its share of the cores."""

from __future__ import annotations

import os

import pytest
import torch

from bigmodel.training import dist


def test_omp_num_threads_is_respected(monkeypatch: pytest.MonkeyPatch):
    # several processes on one machine (tune workers) set it; taking every core anyway made each
    # one's OpenMP threads spin against the others'
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert dist.cpu_threads(0, 1) == 1
    assert dist.cpu_threads(3, 1) == 3  # dist.threads wins over the environment


@pytest.mark.parametrize("value", [None, "", "0", "4,2", "many"])
def test_without_a_usable_omp_num_threads_workers_share_the_cores(monkeypatch: pytest.MonkeyPatch, value):
    if value is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert dist.cpu_threads(0, 1) == 8
    assert dist.cpu_threads(0, 3) == 2
    assert dist.cpu_threads(0, 16) == 1


def test_setup_applies_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        env = dist.setup(device="cpu")
        assert env.world == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
