"""``train(cfg)``: one training run, top to bottom.

The parent checks everything a user can get wrong (dataset, batch size, run directory: see
``run_dir.prepare_run``) before any worker starts, then runs ``worker(run)`` in 1 process, in N local
processes, or in each process torchrun started. Inside a worker, ``trainer.build`` makes the run's parts once
(data streams, model, optimizer, the state a checkpoint restores), the epochs run ``train_step`` per
batch and ``end_epoch`` per epoch, and ``finish`` writes the model directory. A step covers
``grad_accum`` global batches (all of them for ``gd``); each rank sums its rows' losses and divides
by the rows of the whole step times 1/N, so DDP's gradient average equals single-process training on
the same global batches, however the rows were split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bigmodel import artifacts, tasks
from bigmodel.config import TrainConfig
from bigmodel.console import RunProgress, run_progress
from bigmodel.data.stream import Batch
from bigmodel.errors import BigModelError
from bigmodel.models import count_params
from bigmodel.models.arch import parse_architecture
from bigmodel.training import checkpoint, dist
from bigmodel.training.checkpoint import TrainerState
from bigmodel.training.evaluation import evaluate_stream
from bigmodel.training.plots import loss_plot
from bigmodel.training.run_dir import LOSS_PLOT, METRICS_FILE, PreparedRun, prepare_run
from bigmodel.training.spec import model_meta, plain_module
from bigmodel.training.trainer import Trainer, build

# Called after each epoch's validation with (epochs done, validation metrics); False stops the run
# there (it still writes its model directory). A tuner's pruner decides through it.
OnEpoch = Callable[[int, dict[str, float]], bool]

# FSDP gathers each block's parameters (and gradients) and frees them right after use. glibc keeps
# freed buffers of up to 32 MiB in its heap, so a worker's resident memory would keep the largest
# gathers forever and never show the sharding; allocations of 1 MiB or more go back to the OS at once.
FSDP_WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def train(cfg: TrainConfig, on_epoch: OnEpoch | None = None) -> dict[str, Any]:
    """``bigmodel.training.train``, which documents it (that module stays light; this one is torch)."""
    run = prepare_run(cfg)
    cfg = run.cfg
    if on_epoch is not None and (dist.under_launcher() or cfg.dist.max_restarts):
        # torchrun's processes, or restarted ones, never got the callback: it would be silently lost
        raise BigModelError(
            "an on_epoch callback needs workers started by train itself (no torchrun, no restarts)"
        )
    if dist.under_launcher():
        return worker(run)
    if cfg.dist.workers > 1 or cfg.dist.max_restarts:
        env = FSDP_WORKER_ENV if cfg.dist.strategy == "fsdp" else None
        # on_epoch goes to the workers pickled: rank 0 calls it, every rank follows its answer
        return dict(
            dist.launch(
                worker, (run, on_epoch), cfg.dist.workers, max_restarts=cfg.dist.max_restarts, env=env
            )
        )
    return worker(run, on_epoch)


def worker(run: PreparedRun, on_epoch: OnEpoch | None = None) -> dict[str, Any]:
    """The whole run inside one process (rank); every rank returns the same summary."""
    cfg = run.cfg
    if dist.restart_count() > 0 and not cfg.resume and checkpoint.latest(Path(str(cfg.run_dir))):
        cfg = cfg.model_copy(update={"resume": True})  # restarted by the elastic launcher: continue
        run = dataclasses.replace(run, cfg=cfg)
    fsdp = cfg.dist.strategy == "fsdp"
    env = dist.setup(cfg.device, cfg.dist.backend, cfg.dist.timeout_s, cfg.dist.threads, group_of_one=fsdp)
    try:
        with dist.fail_on_timeout(env, cfg.dist.timeout_s):
            return _train(run, env, on_epoch)
    finally:
        dist.teardown()


def _train(run: PreparedRun, env: dist.DistEnv, on_epoch: OnEpoch | None = None) -> dict[str, Any]:
    """The loop: ``build`` once, each epoch's steps and its end, then ``finish``."""
    tr = build(run, env)
    cfg, st = run.cfg, tr.state
    val_metrics: dict[str, float] = {}
    capped = False  # max_steps reached
    peak_rss = 0.0
    with (
        run_progress(cfg.epochs, st.epoch, enabled=env.is_main and cfg.progress) as bar,
        contextlib.closing(tr.batch_epochs),
    ):
        for epoch, batches in zip(tr.epoch_range, tr.batch_epochs, strict=True):
            bar.start_epoch(epoch, tr.nb - st.batch)
            ep = _begin_epoch(tr)
            for b in _timed(batches, st):
                if not train_step(tr, b, ep):
                    continue  # the step's gradients are still accumulating
                if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
                    save_checkpoint(tr, ep)
                ep.mark = time.perf_counter()  # the checkpoint's time is no step's
                if env.is_main and ep.mark - ep.last_shown > 0.25:
                    _show(bar, tr, ep, b.index)
                if cfg.max_steps and st.step >= cfg.max_steps:
                    capped = True
                    break
            batches.close()  # an epoch cut short: stops its DataLoader workers (or pipeline) now
            bar.advance(tr.nb - ep.start_batch - ep.shown, "")
            peak_rss = max(peak_rss, dist.peak_rss_mb())  # training's peak, before evaluation adds its own
            val_metrics = end_epoch(tr, ep, epoch, capped)
            bar.end_epoch(f"val loss {val_metrics['loss']:.4f}")
            if capped or (cfg.until_converged and st.bad_epochs >= cfg.patience):
                break
            if on_epoch is not None and not _go_on(on_epoch, epoch + 1, val_metrics, env):
                break  # stopped from outside (a tuner pruning this trial)
    return finish(tr, val_metrics, peak_rss)


def _go_on(on_epoch: OnEpoch, epochs: int, val_metrics: dict[str, float], env: dist.DistEnv) -> bool:
    """Rank 0 asks ``on_epoch``; every rank gets its answer (they must stop at the same epoch)."""
    go_on = on_epoch(epochs, val_metrics) if env.is_main else True
    flag = torch.tensor([0.0 if go_on else 1.0], dtype=torch.float64)
    return not bool(dist.all_reduce_sum(flag, env, op="max").item())


@dataclass
class Epoch:
    """One epoch's running tallies on this rank (a resumed epoch's start with the part banked in
    its checkpoint)."""

    start_batch: int  # where it starts: past the batches a mid-epoch checkpoint had done
    seconds0: float  # state.train_seconds and train_rows when it started
    rows0: int
    loss: torch.Tensor  # summed training loss of this rank's rows (float64, on the device)
    rows: int
    mark: float  # when the step being timed began
    shown: int = 0  # batches the progress bar shows done
    last_shown: float = 0.0


def train_step(tr: Trainer, b: Batch, ep: Epoch) -> bool:
    """Forward and backward one batch; after the last batch of a step, the optimizer step.
    Returns whether it stepped."""
    from bigmodel.training.parallelize import grad_sync  # imported by ``build`` already

    cfg, env, st = tr.cfg, tr.env, tr.state
    step_first = b.index // tr.per_step * tr.per_step
    step_end = min(tr.nb, step_first + tr.per_step)
    step_rows = min(tr.train_stream.n, step_end * tr.batch_size) - step_first * tr.batch_size  # all ranks'
    sync = b.index == step_end - 1
    with grad_sync(tr.ddp_model, sync):
        x, y = b.x.to(env.device, non_blocking=True), b.y.to(env.device, non_blocking=True)
        logits = tr.net(x)
        if tr.teacher is None:
            loss = tasks.loss_sum(tr.spec, logits, y)
        else:
            assert cfg.distill is not None
            with torch.no_grad():
                soft = tr.teacher(x)
            loss = tasks.distill_loss_sum(
                tr.spec, logits, soft, y, cfg.distill.temperature, cfg.distill.alpha
            )
        (loss * (env.world / step_rows)).backward()
    ep.loss += loss.detach()
    ep.rows += len(b.x)
    if not sync:
        return False
    if cfg.optim.grad_clip:
        torch.nn.utils.clip_grad_norm_(tr.model.parameters(), cfg.optim.grad_clip)
    tr.optimizer.step()
    _apply_masks(tr.masks)
    tr.scheduler.step()
    if tr.averager is not None:  # before zero_grad: it averages parameters that have grads
        tr.averager.average_parameters(tr.model.parameters())
    tr.optimizer.zero_grad(set_to_none=True)
    st.train_seconds += time.perf_counter() - ep.mark
    st.train_rows += step_rows
    st.step += 1
    st.batch = b.index + 1
    return True


def end_epoch(tr: Trainer, ep: Epoch, epoch: int, capped: bool) -> dict[str, float]:
    """The epoch's training loss over all ranks, validation, its record in metrics.jsonl and the
    early-stopping count. Returns the validation metrics."""
    cfg, env, st = tr.cfg, tr.env, tr.state
    loss_sum, rows = _epoch_loss(ep, env)
    train_loss = loss_sum / max(rows, 1)
    _check_finite(train_loss, epoch=epoch + 1, step=st.step)  # the same sum on every rank
    if tr.averager is not None:
        _average_now(tr.model, env)  # evaluate (and save) the consensus model, not rank 0's local one
    val_metrics = evaluate_stream(tr.net, tr.val_stream, tr.spec, env, max_rows=cfg.eval_rows)
    if not capped or st.batch >= tr.nb:  # a capped epoch keeps its position, so it can resume
        st.epoch, st.batch = epoch + 1, 0
    else:  # ... and banks its loss so far, which the final checkpoint keeps for the resumed epoch
        st.epoch_loss, st.epoch_rows = loss_sum, rows
    record = {
        "epoch": epoch + 1,
        "step": st.step,
        "train_loss": train_loss,
        "val_loss": val_metrics["loss"],
        **{f"val_{k}": v for k, v in val_metrics.items() if k != "loss"},
        "samples_per_s": (st.train_rows - ep.rows0) / max(st.train_seconds - ep.seconds0, 1e-9),
        "seconds": st.train_seconds - ep.seconds0,
        "lr": tr.scheduler.get_last_lr()[0],
    }
    if env.is_main:
        tr.history.append(record)
        with open(tr.run_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
    improved = val_metrics["loss"] < st.best_val - cfg.tol
    st.best_val = min(st.best_val, val_metrics["loss"])
    st.bad_epochs = 0 if improved else st.bad_epochs + 1
    return val_metrics


def finish(tr: Trainer, val_metrics: dict[str, float], peak_rss: float) -> dict[str, Any]:
    """The last checkpoint and the run's summary; rank 0 writes the model directory and loss plot."""
    from bigmodel.training.parallelize import is_sharded

    cfg, env, st = tr.cfg, tr.env, tr.state
    if not val_metrics:  # resumed a run whose epochs were all done
        val_metrics = evaluate_stream(tr.net, tr.val_stream, tr.spec, env, max_rows=cfg.eval_rows)
    peak_rss = float(dist.all_reduce_sum(torch.tensor(peak_rss or dist.peak_rss_mb()), env, op="max"))
    save_checkpoint(tr)
    weights = checkpoint.full_model_state(tr.model, env) if is_sharded(tr.model) else None
    history = tr.history
    summary = {
        "metrics": val_metrics,
        "train_loss": history[-1]["train_loss"] if history else None,
        "world_size": env.world,
        "samples_per_s": st.train_rows / max(st.train_seconds, 1e-9),
        "data_wait_fraction": st.wait_seconds / max(st.train_seconds, 1e-9),
        "epochs": history[-1]["epoch"] if history else st.epoch,  # a capped epoch counts, as logged
        "steps": st.step,
        "seconds": st.train_seconds,
        "params": count_params(tr.model),
        "strategy": cfg.dist.strategy,
        "peak_rss_mb": peak_rss,
        "restarts": dist.restart_count(),
        "resumed_from_step": tr.resumed_from,
        "run_dir": str(tr.run_dir),
    }
    if env.is_main:
        run = tr.run
        lineage = artifacts.Lineage(
            method="train",
            data_manifest_hash=run.manifest.content_hash,
            params={"optimizer": cfg.optim.name, "epochs": st.epoch, "steps": st.step},
        )
        meta = model_meta(cfg, run.root, run.manifest, run.arch, val_metrics, lineage)
        artifacts.write_model_dir(tr.run_dir, plain_module(run.arch, weights) if weights else tr.model, meta)
        if history and cfg.loss_plot:
            title = f"{run.manifest.name}: {parse_architecture(run.arch).describe()}"
            loss_plot(history, tr.run_dir / LOSS_PLOT, title=title)
    return summary


def save_checkpoint(tr: Trainer, ep: Epoch | None = None) -> None:
    """A checkpoint of the state now (collective); in mid-epoch (``ep`` given), with the epoch's
    loss so far banked in it, so a resumed epoch reports all of it."""
    st = tr.state
    if ep is not None:
        st.epoch_loss, st.epoch_rows = _epoch_loss(ep, tr.env)
        _check_finite(st.epoch_loss / max(st.epoch_rows, 1), epoch=st.epoch + 1, step=st.step)
    checkpoint.save(
        tr.run_dir,
        step=st.step,
        module=tr.model,
        optimizer=tr.optimizer,
        scheduler=tr.scheduler,
        trainer=st,
        env=tr.env,
        keep=tr.cfg.keep_checkpoints,
    )


def _begin_epoch(tr: Trainer) -> Epoch:
    st = tr.state
    loss = torch.zeros((), dtype=torch.float64, device=tr.env.device)
    rows = 0
    if tr.env.is_main and st.batch:  # a resumed epoch: the part before its checkpoint, banked there
        loss += st.epoch_loss or 0.0
        rows = st.epoch_rows or 0
    now = time.perf_counter()
    return Epoch(st.batch, st.train_seconds, st.train_rows, loss, rows, mark=now, last_shown=now)


def _timed(batches: Iterator[Batch], st: TrainerState) -> Iterator[Batch]:
    """The batches, adding the time spent waiting for each to ``st.wait_seconds`` (the epoch's end,
    and its loader shutting down, is no step's wait)."""
    while True:
        t = time.perf_counter()
        b = next(batches, None)
        if b is None:
            return
        st.wait_seconds += time.perf_counter() - t
        yield b


def _show(bar: RunProgress, tr: Trainer, ep: Epoch, index: int) -> None:
    """The epoch's progress, loss and throughput so far (rank 0, at most 4 times a second)."""
    st = tr.state
    done = index + 1 - ep.start_batch
    rate = (st.train_rows - ep.rows0) / max(st.train_seconds - ep.seconds0, 1e-9)
    loss_now = ep.loss.item() / max(ep.rows, 1)
    bar.advance(done - ep.shown, f"loss {loss_now:.4f}  {rate:,.0f} samples/s")
    ep.shown, ep.last_shown = done, ep.mark


def _epoch_loss(ep: Epoch, env: dist.DistEnv) -> tuple[float, int]:
    """The epoch's summed training loss and rows so far, over all ranks."""
    rows = torch.tensor(float(ep.rows), dtype=torch.float64)
    sums = dist.all_reduce_sum(torch.stack([ep.loss.detach().cpu(), rows]), env)
    return float(sums[0]), int(sums[1])


@torch.no_grad()
def _apply_masks(masks: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for p, m in masks:
        p.mul_(m)


@torch.no_grad()
def _average_now(model: torch.nn.Module, env: dist.DistEnv) -> None:
    if env.world == 1:
        return
    for p in model.parameters():
        torch.distributed.all_reduce(p.data)
        p.data /= env.world


def _check_finite(loss: float, *, epoch: int, step: int) -> None:
    """Stop a run whose loss went NaN or infinite, before it saves that model (every rank checks the
    same all-reduced value, so all of them stop together)."""
    if not math.isfinite(loss):
        raise BigModelError(
            f"training diverged in epoch {epoch} (step {step}): the training loss is {loss}; "
            "lower --lr or set optim.grad_clip"
        )
