"""Optimizers and learning-rate schedules from the typed config."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from bigmodel.config import OptimConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """``gd`` and ``sgd`` are both torch SGD: they differ in what a step covers (the loop decides)."""
    if cfg.name in ("gd", "sgd"):
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate before optimizer step ``step`` (0-based)."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.schedule == "step":
        return warm * cfg.gamma ** (step // cfg.step_size)
    if cfg.schedule == "cosine":
        span = max(1, total_steps - cfg.warmup_steps)
        t = min(1.0, max(0, step - cfg.warmup_steps) / span)
        return warm * 0.5 * (1.0 + math.cos(math.pi * t))
    return warm


def build_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> LambdaLR:
    return LambdaLR(opt, lambda step: lr_factor(cfg, step, total_steps))
