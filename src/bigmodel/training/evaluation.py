"""Metrics of a model on a dataset split: in the training loop (all ranks) and as ``bigmodel evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bigmodel import tasks
from bigmodel.artifacts import load_model
from bigmodel.data.builtin import resolve
from bigmodel.data.stream import ParquetStream, iterate
from bigmodel.errors import BigModelError
from bigmodel.tasks import TaskSpec
from bigmodel.training.dist import DistEnv, all_reduce_sum

SINGLE = DistEnv(rank=0, world=1, local_rank=0, local_world=1, device=torch.device("cpu"))


@torch.no_grad()
def evaluate_stream(
    model: nn.Module, stream: ParquetStream, spec: TaskSpec, env: DistEnv = SINGLE, *, max_rows: int = 0
) -> dict[str, float]:
    """Each rank scores its share of every batch (the first ``max_rows`` rows of the split, if
    set); the sums are all-reduced, so all ranks agree. Every rank calls the model for every batch,
    even an empty share: a sharded (FSDP) model gathers its parameters collectively."""
    was_training = model.training
    model.eval()
    sums = tasks.new_sums(spec)
    batches = iterate(stream, 0, prefetch=1)
    for batch in batches:
        tasks.update_sums(spec, sums, model(batch.x.to(env.device)), batch.y.to(env.device))
        if max_rows and (batch.index + 1) * stream.batch_size >= max_rows:
            break
    batches.close()
    model.train(was_training)
    return tasks.finalize(spec, all_reduce_sum(sums, env))


def evaluate(
    model_dir: str | Path, dataset: str | None = None, *, split: str = "val", batch_size: int = 4096
) -> dict[str, Any]:
    """Score a model directory on a dataset split (default: the split it was validated on)."""
    loaded = load_model(model_dir)
    meta = loaded.meta
    if dataset is None:
        if not meta.dataset:
            raise BigModelError(f"{model_dir} records no dataset; pass --dataset")
        dataset = meta.dataset["path"]
    # A built-in is split by seed and val_fraction: score the split this model was trained against.
    trained = meta.config or {}
    data = trained.get("data")  # a training config's section; a federated config has none
    root, manifest = resolve(
        dataset,
        seed=trained.get("seed", 0),
        val_fraction=data.get("val_fraction", 0.2) if isinstance(data, dict) else 0.2,
    )
    if manifest.features != meta.features:
        raise BigModelError(
            f"dataset {dataset} has features {manifest.features[:5]}... but the model expects "
            f"{meta.features[:5]}... ({len(meta.features)} features)"
        )
    spec = meta.spec
    if manifest.task != spec.task:
        raise BigModelError(f"dataset {dataset} is a {manifest.task} task but the model is {spec.task}")
    if spec.label_values is not None and manifest.label_values != spec.label_values:
        # Codes 0..K-1 would be compared as if they meant the same labels.
        raise BigModelError(
            f"dataset {dataset} has labels {manifest.label_values} but the model predicts {spec.label_values}"
        )
    stream = ParquetStream(root, manifest, split, batch_size=batch_size, shuffle=False)
    metrics = evaluate_stream(loaded.module, stream, spec)
    return {
        "model_dir": str(model_dir),
        "dataset": str(dataset),
        "split": split,
        "rows": stream.n,
        "metrics": metrics,
    }
