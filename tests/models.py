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


def fit_model_dir(path: Path, x: Any, y: Any, *, hidden: tuple[int, ...] = (16,), steps: int = 300) -> Path:
    """A binary MLP fitted to (x, y) by full-batch Adam in-process (a second, not a training run)."""
    import numpy as np

    xt, yt = (
        torch.from_numpy(np.asarray(x, dtype=np.float32)),
        torch.from_numpy(np.asarray(y, dtype=np.float32)),
    )
    torch.manual_seed(0)
    arch = mlp_architecture(xt.shape[1], 1, list(hidden))
    model = build_model(arch)
    mean, std = xt.mean(0).tolist(), xt.std(0).tolist()
    set_standardization(model, mean, std)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xt)[:, 0], yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    spec = TaskSpec("binary", 1, [0, 1])
    meta = artifacts.ModelMeta(
        architecture=arch,
        task=spec.to_json(),
        features=[f"f{i}" for i in range(xt.shape[1])],
        label="label",
        preprocessing={"mean": mean, "std": std},
        metrics={"accuracy": float(((model(xt)[:, 0] > 0).float() == yt).float().mean())},
    )
    artifacts.write_model_dir(path, model, meta)
    return path


def make_lm_dir(path: Path, *, size: str = "tiny", context: int = 64, seed: int = 0) -> Path:
    """A random byte-level transformer LM as a model directory (for generation and serving)."""
    from bigmodel.models import transformer_architecture

    torch.manual_seed(seed)
    arch = transformer_architecture(size, context)
    meta = artifacts.ModelMeta(
        architecture=arch,
        task={"task": "lm", "num_outputs": 256},
        features=["tokens"],
        metrics={"val_bits_per_byte": 8.0},
        lineage=artifacts.Lineage(method="train", data_manifest_hash="cd" * 32),
    )
    artifacts.write_model_dir(path, build_model(arch), meta)
    return path
