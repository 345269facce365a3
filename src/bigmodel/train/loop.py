"""``train(cfg)``: one training run, top to bottom.

The parent checks everything a user can get wrong (dataset, batch size, run directory: see
``run_dir.prepare_run``) before any worker starts, then runs ``worker(cfg)`` in 1 process, in N local processes, or in each process
torchrun started. A step covers ``grad_accum`` global batches (all of them for ``gd``); each rank
sums its rows' losses and divides by the rows of the whole step times 1/N, so DDP's gradient
average equals single-process training on the same global batches, however the rows were split.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, cast

import torch

from bigmodel import artifacts, tasks
from bigmodel.config import TrainConfig, to_dict, validate
from bigmodel.console import err, run_progress
from bigmodel.data.builtin import resolve
from bigmodel.data.stream import ParquetStream, epochs, order_tag
from bigmodel.errors import BigModelError
from bigmodel.models import build_model, count_params, set_standardization
from bigmodel.train import checkpoint, dist
from bigmodel.train.evaluation import evaluate_stream
from bigmodel.train.optim import build_optimizer, build_scheduler
from bigmodel.train.plots import loss_plot
from bigmodel.train.run_dir import LOSS_PLOT, METRICS_FILE, load_history, prepare_run
from bigmodel.train.spec import architecture, eval_batch_size, model_meta, plain_module, task_spec

# FSDP gathers each block's parameters (and gradients) and frees them right after use. glibc keeps
# freed buffers of up to 32 MiB in its heap, so a worker's resident memory would keep the largest
# gathers forever and never show the sharding; allocations of 1 MiB or more go back to the OS at once.
FSDP_WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def train(cfg: TrainConfig) -> dict[str, Any]:
    """``bigmodel.train.train``, which documents it (that module stays light; this one is torch)."""
    cfg = prepare_run(cfg)
    if dist.under_launcher():
        return worker(to_dict(cfg))
    if cfg.dist.workers > 1 or cfg.dist.max_restarts:
        env = FSDP_WORKER_ENV if cfg.dist.strategy == "fsdp" else None
        return dict(
            dist.launch(
                worker, (to_dict(cfg),), cfg.dist.workers, max_restarts=cfg.dist.max_restarts, env=env
            )
        )
    return worker(to_dict(cfg))


def worker(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """The whole run inside one process (rank); every rank returns the same summary."""
    cfg = validate(cfg_dict)
    if dist.restart_count() > 0 and not cfg.resume and checkpoint.latest(Path(str(cfg.run_dir))):
        cfg = cfg.model_copy(update={"resume": True})  # restarted by the elastic launcher: continue
    fsdp = cfg.dist.strategy == "fsdp"
    env = dist.setup(cfg.device, cfg.dist.backend, cfg.dist.timeout_s, cfg.dist.threads, group_of_one=fsdp)
    try:
        with dist.fail_on_timeout(env, cfg.dist.timeout_s):
            return _train(cfg, env)
    finally:
        dist.teardown()


def _train(cfg: TrainConfig, env: dist.DistEnv) -> dict[str, Any]:
    main = env.is_main
    run_dir = Path(str(cfg.run_dir))
    root, manifest = resolve(cfg.data.dataset, seed=cfg.seed, val_fraction=cfg.data.val_fraction)
    spec = task_spec(manifest)

    # data: global batches, this rank's share of each
    gd = cfg.optim.name == "gd"
    train_rows = manifest.split("train").rows
    batch = min(cfg.batch_size, train_rows) if gd else cfg.batch_size
    train_stream = ParquetStream(
        root,
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
        root,
        manifest,
        "val",
        batch_size=eval_batch_size(cfg, manifest, env.world),
        rank=env.rank,
        world=env.world,
        shuffle=False,
    )
    # The position to start from (a resumed run's), then the reader: it starts now, so its first
    # windows are read while the model is built, wrapped and its checkpoint restored.
    found = checkpoint.latest(run_dir) if cfg.resume else None
    skipped = checkpoint.failed_newer(run_dir, found[0]) if found and main else []
    if skipped:  # a resume from further back than the user expects should not be silent
        err.print(
            f"warning: {', '.join(skipped)} failed the hash check (changed since it was written); "
            f"resuming from {found[0].name if found else ''}"
        )
    position = found[1]["trainer"] if found else {"epoch": 0, "batch": 0}
    epoch_range = range(position["epoch"], cfg.epochs)
    batch_epochs = epochs(
        train_stream,
        epoch_range,
        start_batch=position["batch"],
        loader_workers=cfg.data.loader_workers,
        prefetch=cfg.data.prefetch,
        threads=cfg.data.load_threads,
    )
    try:  # a bad --init-from, teacher or checkpoint fails here: stop the reader's threads first
        # DDP/FSDP machinery costs ~1 s to import; only workers need it, not every CLI verb.
        from bigmodel.train.parallelize import grad_sync, is_sharded, parallelize

        # model: plain PyTorch, initialised identically on every rank from the seed, then distributed
        # from outside; the optimizer is built afterwards, on the parameters as parallelize left them
        torch.manual_seed(cfg.seed)
        if cfg.model.init_from:  # start from a model directory's architecture and weights
            start = artifacts.load_model(cfg.model.init_from)
            model, arch = start.module.train(), start.meta.architecture
        else:
            arch = architecture(cfg, manifest)
            model = build_model(arch)
            set_standardization(model, manifest.mean, manifest.std)
        model.to(env.device)
        teacher = _teacher(cfg, env.device)
        ddp_model, averager = parallelize(model, cfg.dist, env)
        net = cast(torch.nn.Module, torch.compile(ddp_model)) if cfg.model.compile else ddp_model
        net.train()

        nb = train_stream.num_batches
        per_step = nb if gd else cfg.optim.grad_accum  # batches per optimizer step
        steps_per_epoch = math.ceil(nb / per_step)

        optimizer = build_optimizer(model.parameters(), cfg.optim)
        total_steps = cfg.epochs * steps_per_epoch
        scheduler = build_scheduler(
            optimizer, cfg.optim, total_steps=min(total_steps, cfg.max_steps or total_steps)
        )
        st: dict[str, Any] = {
            "epoch": 0,
            "batch": 0,
            "step": 0,
            "best_val": math.inf,
            "bad_epochs": 0,
            "train_seconds": 0.0,
            "train_rows": 0,
            "wait_seconds": 0.0,
            "data_hash": manifest.content_hash,  # a resume must find the same rows
            "order": order_tag(train_stream.block),  # ... in the same order
        }
        if cfg.resume:
            assert found is not None  # checked by prepare_run
            st = checkpoint.restore(*found, module=model, optimizer=optimizer, scheduler=scheduler, env=env)
        resumed_from = st["step"] if cfg.resume else None
        history = load_history(run_dir, upto_epoch=st["epoch"]) if main else []
        masks = _zero_masks(model) if cfg.model.keep_sparsity else []
    except BaseException:
        batch_epochs.close()
        raise

    def save_checkpoint(loss_acc: torch.Tensor | None = None, rows_local: int = 0) -> None:
        if loss_acc is not None:  # bank the epoch's loss so far, so a resumed epoch reports all of it
            sums = dist.all_reduce_sum(
                torch.stack([loss_acc.detach().cpu(), torch.tensor(float(rows_local), dtype=torch.float64)]),
                env,
            )
            st["epoch_loss"], st["epoch_rows"] = float(sums[0]), int(sums[1])
            _check_finite(st["epoch_loss"] / max(st["epoch_rows"], 1), epoch=st["epoch"] + 1, step=st["step"])
        checkpoint.save(
            run_dir,
            step=st["step"],
            module=model,
            optimizer=optimizer,
            scheduler=scheduler,
            trainer=st,
            env=env,
            keep=cfg.keep_checkpoints,
        )

    val_metrics: dict[str, float] = {}
    capped = False  # max_steps reached
    peak_rss = 0.0
    with (
        run_progress(cfg.epochs, st["epoch"], enabled=main and cfg.progress) as bar,
        contextlib.closing(batch_epochs),
    ):
        for epoch, batches in zip(epoch_range, batch_epochs, strict=True):
            start_batch = st["batch"]
            seconds0, rows0 = st["train_seconds"], st["train_rows"]
            # This epoch's summed training loss and rows; a resumed epoch starts from the banked part.
            loss_acc = torch.zeros((), dtype=torch.float64, device=env.device)
            rows_local = 0
            if main and start_batch:
                loss_acc += st.get("epoch_loss", 0.0)
                rows_local = st.get("epoch_rows", 0)
            shown, last_shown = 0, time.perf_counter()
            bar.start_epoch(epoch, nb - start_batch)
            mark = time.perf_counter()
            while True:
                tw = time.perf_counter()
                b = next(batches, None)
                if b is None:  # the epoch's end (and its loader shutting down) is no step's wait
                    break
                st["wait_seconds"] += time.perf_counter() - tw
                step_first = b.index // per_step * per_step
                step_end = min(nb, step_first + per_step)
                step_rows = min(train_stream.n, step_end * batch) - step_first * batch
                sync = b.index == step_end - 1
                with grad_sync(ddp_model, sync):
                    x, y = b.x.to(env.device, non_blocking=True), b.y.to(env.device, non_blocking=True)
                    logits = net(x)
                    if teacher is None:
                        loss = tasks.loss_sum(spec, logits, y)
                    else:
                        assert cfg.distill is not None
                        with torch.no_grad():
                            soft = teacher(x)
                        loss = tasks.distill_loss_sum(
                            spec, logits, soft, y, cfg.distill.temperature, cfg.distill.alpha
                        )
                    (loss * (env.world / step_rows)).backward()
                loss_acc += loss.detach()
                rows_local += len(b.x)
                if sync:
                    if cfg.optim.grad_clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                    optimizer.step()
                    _apply_masks(masks)
                    scheduler.step()
                    if averager is not None:  # before zero_grad: it averages parameters that have grads
                        averager.average_parameters(model.parameters())
                    optimizer.zero_grad(set_to_none=True)
                    now = time.perf_counter()
                    st["train_seconds"] += now - mark
                    st["train_rows"] += step_rows
                    st["step"] += 1
                    st["batch"] = b.index + 1
                    if cfg.checkpoint_every and st["step"] % cfg.checkpoint_every == 0:
                        save_checkpoint(loss_acc, rows_local)
                    mark = time.perf_counter()
                    if main and mark - last_shown > 0.25:
                        done = b.index + 1 - start_batch
                        rate = (st["train_rows"] - rows0) / max(st["train_seconds"] - seconds0, 1e-9)
                        loss_now = loss_acc.item() / max(rows_local, 1)
                        bar.advance(done - shown, f"loss {loss_now:.4f}  {rate:,.0f} samples/s")
                        shown, last_shown = done, mark
                    if cfg.max_steps and st["step"] >= cfg.max_steps:
                        capped = True
                        break
            batches.close()  # an epoch cut short: stops its DataLoader workers (or pipeline) now
            bar.advance(nb - start_batch - shown, "")
            peak_rss = max(peak_rss, dist.peak_rss_mb())  # training's peak, before evaluation adds its own

            sums = dist.all_reduce_sum(
                torch.stack([loss_acc.cpu(), torch.tensor(float(rows_local), dtype=torch.float64)]), env
            )
            train_loss = float(sums[0]) / max(float(sums[1]), 1.0)
            _check_finite(train_loss, epoch=epoch + 1, step=st["step"])  # the same sum on every rank
            if averager is not None:
                _average_now(model, env)  # evaluate (and save) the consensus model, not rank 0's local one
            val_metrics = evaluate_stream(net, val_stream, spec, env, max_rows=cfg.eval_rows)
            if not capped or st["batch"] >= nb:  # a capped epoch keeps its position, so it can resume
                st["epoch"], st["batch"] = epoch + 1, 0
            record = {
                "epoch": epoch + 1,
                "step": st["step"],
                "train_loss": train_loss,
                "val_loss": val_metrics["loss"],
                **{f"val_{k}": v for k, v in val_metrics.items() if k != "loss"},
                "samples_per_s": (st["train_rows"] - rows0) / max(st["train_seconds"] - seconds0, 1e-9),
                "seconds": st["train_seconds"] - seconds0,
                "lr": scheduler.get_last_lr()[0],
            }
            if main:
                history.append(record)
                with open(run_dir / METRICS_FILE, "a") as f:
                    f.write(json.dumps(record) + "\n")
            improved = val_metrics["loss"] < st["best_val"] - cfg.tol
            st["best_val"] = min(st["best_val"], val_metrics["loss"])
            st["bad_epochs"] = 0 if improved else st["bad_epochs"] + 1
            bar.end_epoch(f"val loss {val_metrics['loss']:.4f}")
            if capped or (cfg.until_converged and st["bad_epochs"] >= cfg.patience):
                break

    if not val_metrics:  # resumed a run whose epochs were all done
        val_metrics = evaluate_stream(net, val_stream, spec, env, max_rows=cfg.eval_rows)
    peak_rss = float(dist.all_reduce_sum(torch.tensor(peak_rss or dist.peak_rss_mb()), env, op="max"))
    save_checkpoint()
    weights = checkpoint.full_model_state(model, env) if is_sharded(model) else None
    summary = {
        "metrics": val_metrics,
        "train_loss": history[-1]["train_loss"] if history else None,
        "world_size": env.world,
        "samples_per_s": st["train_rows"] / max(st["train_seconds"], 1e-9),
        "data_wait_fraction": st["wait_seconds"] / max(st["train_seconds"], 1e-9),
        "epochs": history[-1]["epoch"] if history else st["epoch"],  # a capped epoch counts, as logged
        "steps": st["step"],
        "seconds": st["train_seconds"],
        "params": count_params(model),
        "strategy": cfg.dist.strategy,
        "peak_rss_mb": peak_rss,
        "restarts": dist.restart_count(),
        "resumed_from_step": resumed_from,
        "run_dir": str(run_dir),
    }
    if main:
        lineage = artifacts.Lineage(
            method="train",
            data_manifest_hash=manifest.content_hash,
            params={"optimizer": cfg.optim.name, "epochs": st["epoch"], "steps": st["step"]},
        )
        meta = model_meta(cfg, root, manifest, arch, summary["metrics"], lineage)
        artifacts.write_model_dir(run_dir, plain_module(arch, weights) if weights else model, meta)
        if history:
            loss_plot(
                history, run_dir / LOSS_PLOT, title=f"{manifest.name}: {cfg.model.name} {cfg.model.hidden}"
            )
    return summary


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
