"""Small model directories for tests, written directly (no training): seconds matter in the suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bigmodel import artifacts
from bigmodel.models import build_model, mlp_architecture, set_standardization
from bigmodel.tasks import TaskSpec


def make_model_dir(
    path: Path,
    *,
    features: int = 6,
    hidden: tuple[int, ...] = (16, 8),
    task: str = "multiclass",
    labels: list[Any] | None = None,
    seed: int = 0,
    onnx: bool = False,
    lineage: artifacts.Lineage | None = None,
) -> Path:
    """A random MLP with standardisation statistics, as a model directory (optionally with ONNX)."""
    torch.manual_seed(seed)
    labels = (
        labels
        if labels is not None
        else (["setosa", "versicolor", "virginica"] if task == "multiclass" else None)
    )
    outputs = len(labels) if task == "multiclass" and labels else 1
    arch = mlp_architecture(features, outputs, list(hidden))
    model = build_model(arch)
    mean, std = [float(i) for i in range(features)], [2.0] * features
    set_standardization(model, mean, std)
    spec = TaskSpec(
        task, outputs, labels, 3.0 if task == "regression" else 0.0, 2.0 if task == "regression" else 1.0
    )  # type: ignore[arg-type]
    meta = artifacts.ModelMeta(
        architecture=arch,
        task=spec.to_json(),
        features=[f"f{i}" for i in range(features)],
        label="target",
        preprocessing={"mean": mean, "std": std},
        metrics={"accuracy": 0.5 + seed / 100},
        lineage=lineage or artifacts.Lineage(method="train", data_manifest_hash="ab" * 32),
    )
    artifacts.write_model_dir(path, model, meta)
    if onnx:
        from bigmodel.compress import export_onnx

        export_onnx(path)
    return path
