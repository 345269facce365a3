"""Distribution applied from outside: wrap a plain module for data-parallel training.

The model never knows it is distributed (torchtitan's ``parallelize`` is the model for this file).

``ddp`` replicates the model; options trade exactness for less communication: ``comm_hook=fp16``
halves the bytes of each gradient all-reduce, ``powersgd`` sends a low-rank approximation with error
feedback, and ``local_sgd_period=H`` skips gradient all-reduces and averages the parameters every H
steps (after ``warmup_steps`` of exact DDP).

``fsdp`` shards parameters, gradients and optimizer state with FSDP2 (``fully_shard``): each block
is a unit whose parameters are all-gathered just before it runs and freed after, so a worker holds
1/N of the model plus one block. ``mixed_precision=bf16`` computes in bfloat16 with float32 master
weights and float32 gradient reductions (gloo cannot reduce bf16). Activation checkpointing
recomputes each block's activations in backward instead of keeping them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.distributed._composable import checkpoint as checkpoint_activations
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook import (
    PostLocalSGDState,
    post_localSGD_hook,
)
from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

from bigmodel.config import DistConfig
from bigmodel.models import Transformer
from bigmodel.training.dist import DistEnv


def blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated units of a model: what FSDP shards one at a time and activation checkpointing
    recomputes (a transformer's blocks; an MLP's layer stack)."""
    if isinstance(model, Transformer):
        return list(model.blocks)
    net = getattr(model, "net", None)
    return [net] if isinstance(net, nn.Module) else []


def parallelize(model: nn.Module, cfg: DistConfig, env: DistEnv) -> tuple[nn.Module, Any]:
    """Return (module to call in the loop, model averager or None). With ``fsdp`` the model itself
    is changed in place (its parameters become shards): build the optimizer afterwards."""
    if cfg.activation_checkpointing:
        for block in blocks(model):
            checkpoint_activations(block)
    if cfg.strategy == "fsdp":
        return shard(model, cfg, env), None
    if env.world == 1:
        return model, None
    bucket_cap_mb = None
    if cfg.comm_hook == "powersgd" and env.device.type != "cuda":
        # PowerSGD's callbacks block a gloo worker thread while they wait for their next
        # all-reduce, and gloo has two: two buckets in flight deadlock (seen on a 1.3M-parameter
        # MLP). One bucket for all gradients leaves a thread free for the nested all-reduces.
        grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        bucket_cap_mb = grad_bytes / 2**20 + 1
    ddp = DDP(
        model,
        device_ids=[env.device.index] if env.device.type == "cuda" else None,
        # Buffers (the standardisation statistics) are identical on every rank and never change.
        forward_sync_buffers=False,
        bucket_cap_mb=bucket_cap_mb,
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


def shard(model: nn.Module, cfg: DistConfig, env: DistEnv) -> nn.Module:
    """FSDP2: every block, then the root (embeddings, head, norms), over a 1-D mesh of all ranks."""
    mesh = init_device_mesh(env.device.type, (env.world,))
    inner = root = MixedPrecisionPolicy()
    if cfg.mixed_precision == "bf16":
        inner = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        # Only the model's output goes back to float32: the loss and metrics in full precision,
        # while activations between blocks stay bf16.
        root = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32, output_dtype=torch.float32
        )
    for block in blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=inner)
    fully_shard(model, mesh=mesh, mp_policy=root)
    return model


@contextlib.contextmanager
def grad_sync(module: nn.Module, sync: bool) -> Iterator[None]:
    """Accumulate gradients locally (no communication) unless ``sync``: DDP's ``no_sync`` and
    FSDP's ``set_requires_gradient_sync``; a plain module always accumulates locally."""
    if sync:
        yield
    elif isinstance(module, DDP):
        with module.no_sync():
            yield
    elif isinstance(module, FSDPModule):
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
    else:
        yield


def is_sharded(module: nn.Module) -> bool:
    return isinstance(module, FSDPModule)
