"""The parts of a training run, made once per worker process: ``build(run, env) -> Trainer``.

Data streams (this rank's share of each global batch), the model (plain PyTorch, distributed from
outside by ``parallelize``), optimizer and schedule, and the state to start from: a new run's, or a
resumed run's restored from its checkpoint. ``loop`` then runs the epochs over the ``Trainer``.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import torch

from bigmodel import artifacts, tasks
from bigmodel.config import TrainConfig
from bigmodel.console import err
from bigmodel.data.stream import Batch, ParquetStream, epochs, order_tag
from bigmodel.models import build_model, set_standardization
from bigmodel.training import checkpoint, dist
from bigmodel.training.checkpoint import TrainerState
from bigmodel.training.optim import build_optimizer, build_scheduler
from bigmodel.training.run_dir import PreparedRun, load_history
from bigmodel.training.spec import eval_batch_size, task_spec


class BatchEpochs(Protocol):
    """What ``epochs`` returns: for each epoch, an iterator over its batches; ``close`` stops the reader."""

    def __iter__(self) -> Iterator[Generator[Batch, None, None]]: ...

    def close(self) -> None: ...


@dataclass
class Trainer:
    """What ``build`` makes once for a run in this process; ``state`` is what a checkpoint keeps."""

    run: PreparedRun
    env: dist.DistEnv
    state: TrainerState
    resumed_from: int | None  # the step a resumed run started from
    history: list[dict[str, Any]]  # the epoch records of metrics.jsonl (rank 0's)
    spec: tasks.TaskSpec
    # data: global batches of ``batch_size`` rows, this rank's share of each
    train_stream: ParquetStream
    val_stream: ParquetStream
    batch_epochs: BatchEpochs
    epoch_range: range
    batch_size: int
    nb: int  # batches per epoch
    per_step: int  # batches per optimizer step
    # model: the plain module, as parallelize wrapped it, and as torch.compile compiled that
    model: torch.nn.Module
    ddp_model: torch.nn.Module
    net: torch.nn.Module
    averager: Any  # local SGD's parameter averager, or None
    teacher: torch.nn.Module | None
    masks: list[tuple[torch.Tensor, torch.Tensor]]  # keep_sparsity: (weight, its non-zeros)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR

    @property
    def cfg(self) -> TrainConfig:
        return self.run.cfg

    @property
    def run_dir(self) -> Path:
        return Path(str(self.run.cfg.run_dir))


def build(run: PreparedRun, env: dist.DistEnv) -> Trainer:
    """The run's parts, once: data streams, model (distributed from outside), optimizer, schedule,
    and the state to start from (a resumed run's, restored from its checkpoint)."""
    cfg, manifest = run.cfg, run.manifest
    run_dir = Path(str(cfg.run_dir))
    gd = cfg.optim.name == "gd"
    batch = min(cfg.batch_size, manifest.split("train").rows) if gd else cfg.batch_size
    train_stream, val_stream = _streams(run, env, batch)
    # The position to start from (a resumed run's), then the reader: it starts now, so its first
    # windows are read while the model is built, wrapped and its checkpoint restored.
    found = _resume_from(run_dir, env) if cfg.resume else None
    # A new run's state: the dataset's rows and order, which a resume must find again.
    state = TrainerState(data_hash=manifest.content_hash, order=order_tag(train_stream.block))
    position = TrainerState.from_json(found[1]["trainer"]) if found else state
    epoch_range = range(position.epoch, cfg.epochs)
    batch_epochs = epochs(
        train_stream,
        epoch_range,
        start_batch=position.batch,
        loader_workers=cfg.data.loader_workers,
        prefetch=cfg.data.prefetch,
        threads=cfg.data.load_threads,
    )
    try:  # a bad --init-from, teacher or checkpoint fails here: stop the reader's threads first
        # DDP/FSDP machinery costs ~1 s to import; only workers need it, not every CLI verb.
        from bigmodel.training.parallelize import parallelize

        # model: plain PyTorch, initialised identically on every rank from the seed, then distributed
        # from outside; the optimizer is built afterwards, on the parameters as parallelize left them
        torch.manual_seed(cfg.seed)
        model = _model(run).to(env.device)
        teacher = _teacher(cfg, env.device)
        ddp_model, averager = parallelize(model, cfg.dist, env)
        net = cast(torch.nn.Module, torch.compile(ddp_model)) if cfg.model.compile else ddp_model
        net.train()

        nb = train_stream.num_batches
        per_step = nb if gd else cfg.optim.grad_accum
        optimizer = build_optimizer(model.parameters(), cfg.optim)
        total_steps = cfg.epochs * math.ceil(nb / per_step)
        scheduler = build_scheduler(
            optimizer, cfg.optim, total_steps=min(total_steps, cfg.max_steps or total_steps)
        )
        if cfg.resume:
            assert found is not None  # checked by prepare_run
            state = checkpoint.restore(
                *found, module=model, optimizer=optimizer, scheduler=scheduler, env=env
            )
            # From here on rows come in this reader's order (prepare_run refused a mid-epoch resume
            # under another): later checkpoints must say so, or their own resume would be refused.
            state.order = order_tag(train_stream.block)
        history = load_history(run_dir, upto_epoch=state.epoch) if env.is_main else []
        masks = _zero_masks(model) if cfg.model.keep_sparsity else []
    except BaseException:
        batch_epochs.close()
        raise
    return Trainer(
        run=run,
        env=env,
        state=state,
        resumed_from=state.step if cfg.resume else None,
        history=history,
        spec=task_spec(manifest),
        train_stream=train_stream,
        val_stream=val_stream,
        batch_epochs=batch_epochs,
        epoch_range=epoch_range,
        batch_size=batch,
        nb=nb,
        per_step=per_step,
        model=model,
        ddp_model=ddp_model,
        net=net,
        averager=averager,
        teacher=teacher,
        masks=masks,
        optimizer=optimizer,
        scheduler=scheduler,
    )


def _model(run: PreparedRun) -> torch.nn.Module:
    """The model to train: ``model.init_from``'s weights, or a new one of the run's architecture."""
    if run.cfg.model.init_from:
        return artifacts.load_model(run.cfg.model.init_from).module.train()
    model = build_model(run.arch)
    set_standardization(model, run.manifest.mean, run.manifest.std)
    return model


def _streams(run: PreparedRun, env: dist.DistEnv, batch: int) -> tuple[ParquetStream, ParquetStream]:
    """This rank's share of each global batch: training batches of ``batch`` rows, shuffled; and
    validation batches."""
    cfg, manifest = run.cfg, run.manifest
    train_stream = ParquetStream(
        run.root,
        manifest,
        "train",
        batch_size=batch,
        rank=env.rank,
        world=env.world,
        seed=cfg.seed,
        shuffle=True,
        window_rows=cfg.data.shuffle_window,
        shuffle_block=cfg.data.shuffle_block,
    )
    val_stream = ParquetStream(
        run.root,
        manifest,
        "val",
        batch_size=eval_batch_size(cfg, manifest, env.world),
        rank=env.rank,
        world=env.world,
        shuffle=False,
    )
    return train_stream, val_stream


def _resume_from(run_dir: Path, env: dist.DistEnv) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint a resumed run starts from: the newest that passes its hash check."""
    found = checkpoint.latest(run_dir)
    skipped = checkpoint.failed_newer(run_dir, found[0]) if found and env.is_main else []
    if skipped:  # a resume from further back than the user expects should not be silent
        err.print(
            f"warning: {', '.join(skipped)} failed the hash check (changed since it was written); "
            f"resuming from {found[0].name if found else ''}"
        )
    return found


def _teacher(cfg: TrainConfig, device: torch.device) -> torch.nn.Module | None:
    """The frozen teacher of a distillation run (it standardises raw features itself)."""
    if cfg.distill is None:
        return None
    teacher = artifacts.load_model(cfg.distill.teacher).module.to(device).eval()
    teacher.requires_grad_(False)
    return teacher


def _zero_masks(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, mask of its non-zeros) for every matrix: a pruned model's zeros stay pruned."""
    return [(p, p.detach() != 0) for p in model.parameters() if p.dim() > 1]
