"""Distribution applied from outside: wrap a plain module for data-parallel training.

The model never knows it is distributed. Options trade exactness for less communication:
``comm_hook=fp16`` halves the bytes of each gradient all-reduce, ``powersgd`` sends a low-rank
approximation with error feedback, and ``local_sgd_period=H`` skips gradient all-reduces and
averages the parameters every H steps (after ``warmup_steps`` of exact DDP).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook import (
    PostLocalSGDState,
    post_localSGD_hook,
)
from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager
from torch.nn.parallel import DistributedDataParallel as DDP

from bigmodel.config import DistConfig
from bigmodel.train.dist import DistEnv


def parallelize(model: nn.Module, cfg: DistConfig, env: DistEnv) -> tuple[nn.Module, Any]:
    """Return (module to call in the loop, model averager or None)."""
    if env.world == 1:
        return model, None
    ddp = DDP(
        model,
        device_ids=[env.device.index] if env.device.type == "cuda" else None,
        # Buffers (the standardisation statistics) are identical on every rank and never change.
        forward_sync_buffers=False,
    )
    averager = None
    if cfg.local_sgd_period > 1:
        local = PostLocalSGDState(
            process_group=None,
            subgroup=None,
            start_localSGD_iter=cfg.warmup_steps,
            post_local_gradient_allreduce=False,
        )
        ddp.register_comm_hook(local, post_localSGD_hook)
        averager = PeriodicModelAverager(period=cfg.local_sgd_period, warmup_steps=cfg.warmup_steps)
    elif cfg.comm_hook == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif cfg.comm_hook == "powersgd":
        psgd = powerSGD_hook.PowerSGDState(
            process_group=None,
            matrix_approximation_rank=cfg.powersgd_rank,
            start_powerSGD_iter=max(cfg.warmup_steps, 2),
        )
        ddp.register_comm_hook(psgd, powerSGD_hook.powerSGD_hook)
    return ddp, averager
