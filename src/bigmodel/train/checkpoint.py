"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

    checkpoints/step-000000120/
        model.safetensors      module state dict
        optimizer.safetensors  optimizer tensors (the structure is in state.json)
        rng.safetensors        each rank's torch RNG state
        state.json             step, data position, trainer state, optimizer/scheduler structure,
                               and the sha256 of each file above; written last

A checkpoint is built under a temporary name and renamed when complete, and a directory whose
state.json is missing or whose hashes do not match is skipped by resume, never trusted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from safetensors.torch import load_file, save_file
from torch import nn

from bigmodel.fsutil import sha256_file, write_json_atomic
from bigmodel.train.dist import DistEnv, barrier

FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    """Replace tensors in a nested structure by references, keeping dict key types and tuples."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten(v, tensors, prefix)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [flatten(v, tensors, prefix) for v in obj]
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
    trainer: dict[str, Any],
    env: DistEnv,
    keep: int = 2,
) -> Path | None:
    """Write a checkpoint (collective: every rank must call). Returns its path on rank 0."""
    rngs = _gather_rng(env)
    root = run_dir / "checkpoints"
    # Named by step, then epoch: the end-of-epoch checkpoint of a step sorts after a mid-epoch one.
    final = root / f"step-{step:09d}-{trainer['epoch']:05d}"
    path = None
    if env.is_main and not final.exists():
        tmp = root / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
            str(tmp / "model.safetensors"),
        )
        opt_tensors: dict[str, torch.Tensor] = {}
        opt_skel = flatten(optimizer.state_dict(), opt_tensors, "opt")
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file({f"rank{r}": t for r, t in enumerate(rngs)}, str(tmp / "rng.safetensors"))
        state = {
            "step": step,
            "world_size": env.world,
            "trainer": trainer,
            "optimizer": opt_skel,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "files": {f: sha256_file(tmp / f) for f in FILES},
        }
        write_json_atomic(tmp / "state.json", state)
        tmp.rename(final)
        for old in sorted(root.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        path = final
    barrier(env)
    return path


def _valid(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((path / "state.json").read_text())
        if all(sha256_file(path / f) == h for f, h in state["files"].items()):
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


def restore(
    path: Path,
    state: dict[str, Any],
    *,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    env: DistEnv,
) -> dict[str, Any]:
    """Load a checkpoint into the given objects; return the trainer state saved with it."""
    module.load_state_dict(load_file(str(path / "model.safetensors")))
    opt_tensors = load_file(str(path / "optimizer.safetensors"))
    optimizer.load_state_dict(unflatten(state["optimizer"], opt_tensors))
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    rngs = load_file(str(path / "rng.safetensors"))
    if state["world_size"] == env.world:
        # Dropout continues exactly; with another world size it cannot, and nothing else needs it.
        torch.set_rng_state(rngs[f"rank{env.rank}"])
    return dict(state["trainer"])
