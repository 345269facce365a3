"""``consolidate(run_dir, dst)``: a training checkpoint -> one model directory.

A checkpoint holds each worker's pieces (whole tensors under DDP, shards under FSDP, saved by any
number of workers). Consolidating reads them in one process into the plain model, scores it on the
validation split, and writes the model directory (``model.safetensors`` + ``model.json``) that
compression, the registry and serving take, e.g. from a run that was stopped before its end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bigmodel import artifacts
from bigmodel.config import load_yaml, validate
from bigmodel.data.builtin import resolve
from bigmodel.data.stream import ParquetStream
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_dir
from bigmodel.models import build_model, count_params
from bigmodel.training import checkpoint
from bigmodel.training.evaluation import evaluate_stream
from bigmodel.training.run_dir import CONFIG_FILE
from bigmodel.training.spec import architecture, eval_batch_size, model_meta, task_spec


def consolidate(run_dir: str | Path, dst: str | Path, *, step: int | None = None) -> dict[str, Any]:
    """Write the model of ``run_dir``'s newest checkpoint (or the one of ``step``) to ``dst``."""
    run_dir, dst = Path(run_dir), Path(dst)
    if dst.exists():
        raise BigModelError(
            f"destination already exists: {dst} (choose a new folder; nothing was overwritten)"
        )
    if not (run_dir / CONFIG_FILE).is_file():
        raise BigModelError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    cfg = validate(load_yaml(run_dir / CONFIG_FILE))
    found = checkpoint.find(run_dir, step)
    if found is None:
        raise BigModelError(checkpoint.none_found(run_dir, step))
    path, state = found
    root, manifest = resolve(cfg.data.dataset, seed=cfg.seed, val_fraction=cfg.data.val_fraction)
    arch = architecture(cfg, manifest)
    model = build_model(arch)
    checkpoint.load_model_weights(path, state, model)
    spec = task_spec(manifest)
    val = ParquetStream(root, manifest, "val", batch_size=eval_batch_size(cfg, manifest), shuffle=False)
    metrics = evaluate_stream(model, val, spec, max_rows=cfg.eval_rows)
    lineage = artifacts.Lineage(
        method="consolidate",
        data_manifest_hash=manifest.content_hash,
        params={
            "run_dir": str(run_dir),
            "checkpoint": path.name,
            "step": state["step"],
            "saved_by_workers": state["world_size"],
            "strategy": cfg.dist.strategy,
        },
    )
    with atomic_dir(dst) as tmp:
        artifacts.write_model_dir(tmp, model, model_meta(cfg, root, manifest, arch, metrics, lineage))
    return {
        "model_dir": str(dst),
        "checkpoint": str(path),
        "step": state["step"],
        "saved_by_workers": state["world_size"],
        "params": count_params(model),
        "metrics": metrics,
    }
