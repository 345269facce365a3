"""What a config and a dataset make together: the model's architecture, its task, its
``model.json``, and the evaluation batch (shared by training and ``consolidate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bigmodel import artifacts
from bigmodel.config import TrainConfig, to_dict
from bigmodel.data.manifest import Manifest
from bigmodel.errors import BigModelError
from bigmodel.models import build_model, mlp_architecture, transformer_architecture
from bigmodel.tasks import TaskSpec


def architecture(cfg: TrainConfig, manifest: Manifest) -> dict[str, Any]:
    """The model the config asks for, sized for the dataset (the architecture dict of model.json):
    with ``model.init_from``, the starting model's."""
    if cfg.model.init_from:
        return artifacts.read_meta(cfg.model.init_from).architecture
    if cfg.model.name == "transformer":
        if manifest.task != "lm":
            raise BigModelError(
                f"--model transformer is a language model: it needs a text dataset (task lm), "
                f"but {manifest.name} is a {manifest.task} dataset"
            )
        return transformer_architecture(cfg.model.size, manifest.context, cfg.model.dropout)
    if manifest.task == "lm":
        raise BigModelError(f"{manifest.name} is a text (lm) dataset: train it with --model transformer")
    return mlp_architecture(
        len(manifest.features),
        manifest.num_outputs,
        cfg.model.hidden,
        cfg.model.activation,
        cfg.model.dropout,
    )


def eval_batch_size(cfg: TrainConfig, manifest: Manifest, world: int = 1) -> int:
    """Rows per evaluation batch: no more than ``eval_rows``, and for a language model, whose
    logits are (rows, context, 256), about 32k tokens."""
    rows = cfg.eval_batch_size
    if manifest.task == "lm":
        rows = min(rows, 32768 // manifest.context)
    if cfg.eval_rows:
        rows = min(rows, cfg.eval_rows)
    return max(rows, world)


def task_spec(manifest: Manifest) -> TaskSpec:
    return TaskSpec(
        manifest.task, manifest.num_outputs, manifest.label_values, manifest.target_mean, manifest.target_std
    )


def model_meta(
    cfg: TrainConfig,
    root: Path,
    manifest: Manifest,
    arch: dict[str, Any],
    metrics: dict[str, float],
    lineage: artifacts.Lineage,
) -> artifacts.ModelMeta:
    """model.json for a model trained by ``cfg`` on ``manifest``."""
    return artifacts.ModelMeta(
        architecture=arch,
        task=task_spec(manifest).to_json(),
        features=manifest.features,
        label=manifest.label,
        preprocessing={"mean": manifest.mean, "std": manifest.std} if manifest.mean else {},
        metrics=metrics,
        config=to_dict(cfg),
        dataset={"path": str(root), "name": manifest.name, "content_hash": manifest.content_hash},
        lineage=lineage,
    )


def plain_module(arch: dict[str, Any], weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A plain module around gathered weights, without allocating a second copy of them."""
    with torch.device("meta"):
        module = build_model(arch)
    module.load_state_dict(weights, assign=True)
    return module
