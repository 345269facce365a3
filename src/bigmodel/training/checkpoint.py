"""Training checkpoints for any strategy and world size, without pickle.

Tensors go through ``torch.distributed.checkpoint`` (DCP): ``get_state_dict`` gives the model and
optimizer state as this rank holds it (whole tensors under DDP, shards under FSDP), and every
rank writes its own pieces. The storage is DCP's safetensors layout (``HuggingFaceStorageWriter``
with ``save_distributed``): each file records the offset of each piece in its JSON header, so a
checkpoint saved on N workers loads on M (DCP reads the slices each new shard needs), in one
process too. DCP's default ``FileSystemWriter`` would also write a ``.metadata`` file that its
reader loads with ``pickle.load``; this layout has none, and nothing here unpickles anything.

    checkpoints/step-000000120-00001/
        shards/shard-00001-model-00001-of-00001.safetensors   rank 0's pieces (rank 1: shard-00002-...)
        rng.safetensors        each rank's torch RNG state
        state.json             step, world size, trainer state (data position, ...), the non-tensor
                               parts of the model/optimizer state dicts, the scheduler, and the
                               sha256 of every file above; written last

A checkpoint is built under a temporary name and renamed when complete; a directory whose
state.json is missing or whose hashes do not match is skipped by resume, never trusted. Several
machines must share the run directory (a network file system).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException

from bigmodel.errors import BigModelError
from bigmodel.fsutil import sha256_file, write_json_atomic
from bigmodel.training.dist import DistEnv, barrier

SHARDS = "shards"
RNG = "rng.safetensors"
STATE = "state.json"


@dataclass
class TrainerState:
    """Where a run stands: what the loop counts and a resume continues from. state.json keeps it as
    its "trainer" object under these names (``to_json``); ``from_json`` reads any checkpoint's, the
    older ones without ``order`` or the banked epoch loss included."""

    epoch: int = 0  # epochs done
    batch: int = 0  # batches of epoch ``epoch`` done: > 0 only for a checkpoint in mid-epoch
    step: int = 0  # optimizer steps done
    best_val: float = math.inf  # the lowest validation loss so far (early stopping) ...
    bad_epochs: int = 0  # ... and the epochs since it last improved by more than ``tol``
    train_seconds: float = 0.0
    train_rows: int = 0
    wait_seconds: float = 0.0  # the part of train_seconds spent waiting for batches
    data_hash: str = ""  # the dataset's content hash: a resume must find the same rows ...
    order: str = "v1"  # ... in the same order (how rows are shuffled; "v1" before it was recorded)
    epoch_loss: float | None = None  # the epoch's summed loss and rows up to a mid-epoch checkpoint,
    epoch_rows: int | None = None  # so that a resumed epoch reports all of it

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> TrainerState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    """Replace tensors in a nested structure by references named by their path (the same names on
    every rank and for every world size), keeping dict key types and tuples."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    return obj


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


@contextlib.contextmanager
def _one_process_is_fine() -> Iterator[None]:
    """DCP warns on every save/load without a process group; one process is a supported case here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is .*single process")
        yield


def _gather_rng(env: DistEnv) -> list[torch.Tensor]:
    state = torch.get_rng_state()
    if env.world == 1:
        return [state]
    buf = state.to(env.device)
    out = [torch.empty_like(buf) for _ in range(env.world)]
    tdist.all_gather(out, buf)
    return [t.cpu() for t in out]


def save(
    run_dir: Path,
    *,
    step: int,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer: TrainerState,
    env: DistEnv,
    keep: int = 2,
) -> Path | None:
    """Write a checkpoint (collective: every rank must call). Returns its path on rank 0."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = run_dir / "checkpoints"
    # Named by step, then epoch: the end-of-epoch checkpoint of a step sorts after a mid-epoch one.
    final = root / f"step-{step:09d}-{trainer.epoch:05d}"
    if final.exists():  # e.g. resuming a finished run: the same state is already saved
        return final if env.is_main else None
    rngs = _gather_rng(env)
    model_sd, optim_sd = get_state_dict(module, optimizer)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = {
        "model": flatten(model_sd, tensors, "model"),
        "optimizer": flatten(optim_sd, tensors, "optim"),
    }
    tmp = root / f".{final.name}.tmp"
    try:
        return _write(final, tmp, tensors, skeleton, rngs, step, scheduler, trainer, env, keep)
    except (OSError, CheckpointException) as err:  # e.g. a full disk, on any rank
        if env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)  # half a checkpoint is never resumed from
        raise BigModelError(f"cannot write checkpoint {final}: {_cause(err)}") from None


def _cause(err: BaseException) -> str:
    """The OS's words for a failed write ("No space left on device"), wherever DCP wrapped them."""
    if isinstance(err, CheckpointException):
        inner = [exc for exc, _ in err.failures.values()]
        err = next((e for e in inner if isinstance(e, OSError)), inner[0] if inner else err)
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _write(
    final: Path,
    tmp: Path,
    tensors: dict[str, torch.Tensor],
    skeleton: dict[str, Any],
    rngs: list[torch.Tensor],
    step: int,
    scheduler: Any,
    trainer: TrainerState,
    env: DistEnv,
    keep: int,
) -> Path | None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    root = final.parent
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / SHARDS).mkdir(parents=True)
    barrier(env)
    with _one_process_is_fine():
        dcp.save(
            tensors,
            storage_writer=HuggingFaceStorageWriter(str(tmp / SHARDS), save_distributed=True),
            no_dist=not tdist.is_initialized(),
        )
    path = None
    if env.is_main:  # dcp.save returns on rank 0 only after every rank has written its pieces
        save_file({f"rank{r}": t for r, t in enumerate(rngs)}, str(tmp / RNG))
        files = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file())
        state = {
            "step": step,
            "world_size": env.world,
            "trainer": trainer.to_json(),
            **skeleton,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "files": {f: sha256_file(tmp / f) for f in files},
        }
        write_json_atomic(tmp / STATE, state)
        tmp.rename(final)
        for old in sorted(root.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        path = final
    barrier(env)
    return path


def _valid(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((path / STATE).read_text())
        if state["files"] and all(sha256_file(path / f) == h for f, h in state["files"].items()):
            return dict(state)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def latest(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete, hash-verified checkpoint in a run directory, if any."""
    for path in sorted((run_dir / "checkpoints").glob("step-*"), reverse=True):
        state = _valid(path)
        if state is not None:
            return path, state
    return None


def failed_newer(run_dir: Path, found: Path) -> list[str]:
    """The checkpoints newer than ``found`` (which ``latest`` skipped: they failed the hash check)."""
    return [p.name for p in sorted((run_dir / "checkpoints").glob("step-*")) if p.name > found.name]


def _refs(skeleton: Any) -> list[str]:
    """The tensor names a skeleton refers to."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return [skeleton["__tensor__"]]
        items = skeleton["__tuple__"] if "__tuple__" in skeleton else [v for _, v in skeleton["__dict__"]]
        return [r for v in items for r in _refs(v)]
    if isinstance(skeleton, list):
        return [r for v in skeleton for r in _refs(v)]
    return []


def none_found(run_dir: Path, step: int | None = None) -> str:
    """Why ``find`` found nothing, for the error: "no complete checkpoint (of step S) in DIR", and
    which checkpoints are there but failed their hash check (changed or half-written)."""
    pattern = "step-*" if step is None else f"step-{step:09d}-*"
    bad = sorted(p.name for p in (run_dir / "checkpoints").glob(pattern))
    which = "complete checkpoint" + (f" of step {step}" if step is not None else "")
    failed = f" ({', '.join(bad[-3:])} failed the hash check)" if bad else ""
    return f"no {which} in {run_dir / 'checkpoints'}{failed}"


def find(run_dir: Path, step: int | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The newest verified checkpoint, or the newest of ``step``."""
    if step is None:
        return latest(run_dir)
    for path in sorted((run_dir / "checkpoints").glob(f"step-{step:09d}-*"), reverse=True):
        state = _valid(path)
        if state is not None:
            return path, state
    return None


def _load_tensors(path: Path, skeleton: Any, targets: Any, prefix: str) -> Any:
    """Fill ``targets`` (a state dict as this rank holds it: whole tensors or shards) from the
    checkpoint in place, and return the saved structure with those tensors in it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.api import CheckpointException

    tensors: dict[str, torch.Tensor] = {}
    flatten(targets, tensors, prefix)
    wanted = _refs(skeleton)
    missing = [k for k in wanted if k not in tensors]
    if missing:
        raise BigModelError(f"checkpoint {path} does not fit this model: no place for {missing[0]}")
    try:
        with _one_process_is_fine():
            dcp.load(
                {k: tensors[k] for k in wanted},
                storage_reader=HuggingFaceStorageReader(str(path / SHARDS)),
                no_dist=not tdist.is_initialized(),
            )
    except (ValueError, RuntimeError, CheckpointException) as err:  # e.g. "Size mismatch between ..."
        # A CheckpointException (a BaseException) wraps each rank's error with its traceback.
        cause = next(iter(err.failures.values()))[0] if isinstance(err, CheckpointException) else err
        raise BigModelError(
            f"checkpoint {path} does not fit this model: {str(cause).splitlines()[0]}"
        ) from None
    return unflatten(skeleton, tensors)


def restore(
    path: Path,
    state: dict[str, Any],
    *,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    env: DistEnv,
) -> TrainerState:
    """Load a checkpoint saved on any number of workers into the given (plain, DDP or FSDP)
    objects; return the trainer state saved with it."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(module, optimizer)  # this world's layout (creates optimizer state)
    model_sd = _load_tensors(path, state["model"], model_sd, "model")
    optim_sd = _load_tensors(path, state["optimizer"], optim_sd, "optim")
    set_state_dict(module, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    rngs = load_file(str(path / RNG))
    if state["world_size"] == env.world:
        # Dropout continues exactly; with another world size it cannot, and nothing else needs it.
        torch.set_rng_state(rngs[f"rank{env.rank}"])
    return TrainerState.from_json(state["trainer"])


def load_model_weights(path: Path, state: dict[str, Any], module: nn.Module) -> None:
    """Load only the model part of a checkpoint into a plain module, in one process."""
    sd = _load_tensors(path, state["model"], module.state_dict(), "model")
    module.load_state_dict(sd)


def full_model_state(module: nn.Module, env: DistEnv) -> dict[str, torch.Tensor]:
    """The whole model's state dict as plain CPU tensors on rank 0, gathered from the shards
    (collective: every rank must call; other ranks get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in sd.items() if isinstance(v, torch.Tensor)} if env.is_main else {}
