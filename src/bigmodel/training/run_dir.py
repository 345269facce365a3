"""A run directory: where a run goes, and what a new run or a resume may find there.

``prepare_run`` checks everything a user can get wrong before any worker starts (dataset, batch
size, starting and teacher models, the folder itself), writes the resolved ``config.yaml`` and
hands the workers what it resolved: the dataset and the architecture. A new run takes only a new or
empty folder, or one that a run of ours left before its first checkpoint; a resume keeps its model,
data and optimizer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
import yaml

from bigmodel import artifacts
from bigmodel.config import TrainConfig, load_yaml, to_dict, validate
from bigmodel.data.builtin import resolve
from bigmodel.data.manifest import Manifest
from bigmodel.data.stream import list_row_groups, order_tag, shuffle_unit
from bigmodel.errors import BigModelError
from bigmodel.fsutil import fresh_dir, make_dir, write_text_atomic
from bigmodel.training import checkpoint, dist
from bigmodel.training.spec import architecture

CONFIG_FILE = "config.yaml"
CONFIG_HEADER = "# written by bigmodel train: this run's resolved config (--resume reads it)\n"
METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"


@dataclass(frozen=True)
class PreparedRun:
    """A checked run, resolved once for all its workers: the config (its ``run_dir`` set), the
    dataset's folder and manifest, and the architecture of the model it trains."""

    cfg: TrainConfig
    root: Path
    manifest: Manifest
    arch: dict[str, Any]


def prepare_run(cfg: TrainConfig) -> PreparedRun:
    """Resolve the dataset and run directory and check them against the config (in the parent,
    or in every rank torchrun started)."""
    root, manifest = resolve(cfg.data.dataset, seed=cfg.seed, val_fraction=cfg.data.val_fraction)
    arch = architecture(cfg, manifest)  # model and dataset must fit each other
    if cfg.device == "cuda":
        dist.pick_device("cuda", 0)  # no GPU: one error here rather than one per worker
    if cfg.dist.backend == "nccl" and not (torch.cuda.is_available() and tdist.is_nccl_available()):
        raise BigModelError(
            "dist.backend nccl needs CUDA GPUs and a torch built with NCCL; use gloo (or auto)"
        )
    for split in manifest.splits:  # every shard's footer parses (a bad one fails here, not in a worker)
        list_row_groups(root, manifest, split)
    n_train = manifest.split("train").rows
    if cfg.optim.name != "gd" and cfg.batch_size > n_train:
        raise BigModelError(
            f"--batch-size {cfg.batch_size} is larger than the training split of "
            f"{cfg.data.dataset} ({n_train} rows)"
        )
    steps = math.ceil(math.ceil(n_train / cfg.batch_size) / cfg.optim.grad_accum) * cfg.epochs
    if cfg.optim.name == "gd":
        steps = cfg.epochs  # one step per epoch
    steps = min(steps, cfg.max_steps or steps)
    if cfg.optim.warmup_steps >= steps:
        raise BigModelError(
            f"optim.warmup_steps {cfg.optim.warmup_steps} is not below this run's {steps} optimizer "
            "steps: the learning rate would never reach --lr"
        )
    for role, src in (
        ("model.init_from", cfg.model.init_from),
        ("distill.teacher", cfg.distill and cfg.distill.teacher),
    ):
        if src:
            _check_model_fits(role, src, manifest)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else _default_run_dir(manifest)
    if cfg.resume:
        if checkpoint.latest(run_dir) is None:
            raise BigModelError(
                f"--resume: {checkpoint.none_found(run_dir)}; a run that stopped before its first "
                "checkpoint starts over without --resume"
            )
        _check_resume_keeps_run(cfg, run_dir, manifest)
    elif dist.restart_count() == 0 and (
        (run_dir / artifacts.META).exists()
        or any(not p.name.startswith(".") for p in _entries(run_dir / "checkpoints"))
    ):
        raise BigModelError(
            f"run directory {run_dir} already holds a run; pass --resume to continue it "
            "or choose a new --run-dir (nothing was overwritten)"
        )
    other_rank = dist.under_launcher() and os.environ["RANK"] != "0"  # every torchrun rank runs this
    if cfg.resume or dist.restart_count() > 0 or other_rank:
        make_dir(run_dir, "run directory")
    else:  # never write into a folder that holds anything else: the user's files are not ours
        if _stopped_before_first_checkpoint(run_dir):
            for p in _entries(run_dir):
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        fresh_dir(run_dir, "run directory")
    cfg = cfg.model_copy(update={"run_dir": str(run_dir)})
    if not other_rank:  # one rank writes
        write_text_atomic(
            run_dir / CONFIG_FILE, CONFIG_HEADER + yaml.safe_dump(to_dict(cfg), sort_keys=False)
        )
    return PreparedRun(cfg, root, manifest, arch)


# What a resume may change: how long it runs, where, on how many workers, how it reports. Any other
# key (model, data and its split, batch size, seed, optimizer and schedule) is what the checkpoint
# and its data position were made for; changing it would not fit, or would silently train another run.
CHANGEABLE_ON_RESUME = frozenset(
    {
        "epochs",
        "max_steps",
        "until_converged",
        "tol",
        "patience",
        "device",
        "run_dir",
        "resume",
        "checkpoint_every",
        "keep_checkpoints",
        "eval_batch_size",
        "eval_rows",
        "progress",
        "data.loader_workers",
        "data.prefetch",
        "data.load_threads",
        "model.compile",
        "dist.workers",
        "dist.backend",
        "dist.threads",
        "dist.timeout_s",
        "dist.max_restarts",
        "dist.activation_checkpointing",
    }
)


def _check_resume_keeps_run(cfg: TrainConfig, run_dir: Path, manifest: Manifest) -> None:
    """Refuse, before config.yaml is rewritten, a resume that changes what the run was (the
    checkpoint would not fit, or would continue under other settings than its config records) or
    whose dataset's rows changed since its checkpoint."""
    saved, now = _flat(to_dict(validate(load_yaml(run_dir / CONFIG_FILE)))), _flat(to_dict(cfg))
    for key in sorted(saved.keys() | now.keys()):
        if key in CHANGEABLE_ON_RESUME:
            continue
        if saved.get(key) != now.get(key):
            raise BigModelError(
                f"--resume: {key} is {now.get(key)!r}, but {run_dir} was trained with {saved.get(key)!r}; "
                "a resumed run keeps its model, data, batch size, seed and optimizer (it may change "
                "epochs, max_steps, workers, early stopping and checkpointing)"
            )
    found = checkpoint.latest(run_dir)
    trainer = checkpoint.TrainerState.from_json(found[1]["trainer"] if found else {})
    recorded = trainer.data_hash
    if recorded and recorded != manifest.content_hash:
        raise BigModelError(
            f"--resume: the rows of {cfg.data.dataset} changed since {run_dir}'s checkpoint (content hash "
            f"{manifest.content_hash[:12]}..., was {recorded[:12]}...)"
        )
    # Mid-epoch, the position counts batches of that epoch's order: under another order the rest of
    # the epoch would repeat some rows and skip others. At an epoch's end any order will do.
    block = shuffle_unit(
        manifest, manifest.split("train").rows, cfg.data.shuffle_window, cfg.data.shuffle_block
    )
    was = trainer.order
    if found and trainer.batch > 0 and was != order_tag(block):
        raise BigModelError(
            f"--resume: {found[0].name} stopped in the middle of epoch {trainer.epoch} with rows in "
            f"another order ({was}; this version reads {order_tag(block)}: bigmodel changed how it "
            "shuffles); resuming there would repeat some rows of the epoch and skip others. Resume "
            "with the bigmodel that wrote it, or train again"
        )


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}"""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _entries(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


def _stopped_before_first_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` is what a run of ours left when it stopped (killed, out of memory, a node
    lost) before its first complete checkpoint: there is nothing to resume, so a new run replaces it.
    Ours: its config.yaml carries our header, and it holds nothing but what a run writes."""
    names = {p.name for p in _entries(run_dir)}
    if CONFIG_FILE not in names or not names <= {CONFIG_FILE, METRICS_FILE, LOSS_PLOT, "checkpoints"}:
        return False
    if any(not p.name.startswith(".") for p in _entries(run_dir / "checkpoints")):
        return False  # a checkpoint, complete or not: not ours to delete
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return (run_dir / CONFIG_FILE).read_text().startswith(CONFIG_HEADER)
    return False


def _check_model_fits(role: str, path: str, manifest: Manifest) -> None:
    """A starting or teacher model must be intact and take this dataset's features and task."""
    meta = artifacts.read_meta(path)
    artifacts.verify(path, meta)
    if meta.features != manifest.features:
        raise BigModelError(f"{role} {path} expects features {meta.features[:5]}..., not this dataset's")
    if meta.task.get("task") != manifest.task or meta.task.get("num_outputs") != manifest.num_outputs:
        raise BigModelError(
            f"{role} {path} is a {meta.task.get('task')} model; the dataset is {manifest.task}"
        )


def _default_run_dir(manifest: Manifest) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path("runs") / f"{manifest.name}-{stamp}"


def load_history(run_dir: Path, upto_epoch: int) -> list[dict[str, Any]]:
    """Epoch records already on disk, cut back to the checkpoint being resumed (a run killed after
    logging an epoch but before checkpointing it will log that epoch again)."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            r = json.loads(line)
            if r.get("epoch", 0) <= upto_epoch:
                records.append(r)
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
    return records
