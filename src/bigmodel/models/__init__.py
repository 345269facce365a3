"""Model builders: an architecture (as stored in model.json) -> a plain nn.Module.

The families themselves (MLP, transformer LM, sentence encoder), with what each supports, are in
``bigmodel.models.arch``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from bigmodel.errors import BigModelError
from bigmodel.models.arch import (
    Arch,
    MLPArch,
    SentenceEncoderArch,
    Supports,
    TransformerArch,
    build_module,
    parse_architecture,
    to_dict,
)
from bigmodel.models.layers import Int8Linear
from bigmodel.models.mlp import MLP, Standardize
from bigmodel.models.transformer import SIZES, VOCAB, Transformer

__all__ = [
    "MLP",
    "SIZES",
    "Arch",
    "MLPArch",
    "SentenceEncoderArch",
    "Standardize",
    "Supports",
    "Transformer",
    "TransformerArch",
    "build_model",
    "count_params",
    "example_input",
    "mlp_architecture",
    "parse_architecture",
    "sentence_architecture",
    "transformer_architecture",
]


def mlp_architecture(
    in_features: int, out_features: int, hidden: list[int], activation: str = "relu", dropout: float = 0.0
) -> dict[str, Any]:
    """The model.json architecture dict of an MLP (validated)."""
    arch = {
        "name": "mlp",
        "in_features": in_features,
        "out_features": out_features,
        "hidden": list(hidden),
        "activation": activation,
        "dropout": dropout,
    }
    return to_dict(parse_architecture(arch))


def transformer_architecture(size: str, context: int, dropout: float = 0.0) -> dict[str, Any]:
    """The model.json architecture dict of a transformer LM of a named size (validated)."""
    layers, width, heads = SIZES[size]
    arch = {
        "name": "transformer",
        "size": size,
        "layers": layers,
        "width": width,
        "heads": heads,
        "context": context,
        "vocab": VOCAB,
        "dropout": dropout,
    }
    return to_dict(parse_architecture(arch))


def sentence_architecture(bert_config: dict[str, Any], max_length: int = 256) -> dict[str, Any]:
    """The model.json architecture dict of a sentence encoder around a BERT config (validated)."""
    keep = {k: v for k, v in bert_config.items() if not k.startswith("_") and k != "transformers_version"}
    arch = {
        "name": "sentence_encoder",
        "bert": keep,
        "pooling": "mean",
        "normalize": True,
        "max_length": max_length,
    }
    return to_dict(parse_architecture(arch))


def build_model(arch: Mapping[str, Any] | Arch) -> nn.Module:
    """Rebuild the module an architecture (a model.json dict, or a typed family) describes, with
    compression's compact layers and dtype applied; weights are loaded separately."""
    return build_module(parse_architecture(arch))


def example_input(
    arch: Mapping[str, Any] | Arch,
    batch: int,
    *,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> torch.Tensor:
    """A batch of plausible raw inputs of a single-input family (for export and benchmarks): (B, F)
    float32 for an MLP, (B, context) int64 byte tokens for a transformer."""
    family = parse_architecture(arch)
    xs = family.example_inputs(batch, mean=mean, std=std)
    if len(xs) != 1:
        raise BigModelError(f"no single example input for model '{family.name}' (it takes {len(xs)})")
    return xs[0]


def set_standardization(model: nn.Module, mean: list[float], std: list[float]) -> None:
    """Copy the dataset statistics into every Standardize layer of ``model``."""
    for m in model.modules():
        if isinstance(m, Standardize):
            m.mean.copy_(torch.tensor(mean, dtype=m.mean.dtype))
            m.std.copy_(torch.tensor(std, dtype=m.std.dtype))


def count_params(model: nn.Module) -> int:
    """Weights and biases, float or int8 (an Int8Linear keeps its weights as buffers)."""
    n = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, Int8Linear):
            n += m.qweight.numel() + m.bias.numel()
    return n
