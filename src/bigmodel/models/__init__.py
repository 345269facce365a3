"""Model builders: an architecture dict (as stored in model.json) -> a plain nn.Module."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bigmodel.errors import BigModelError
from bigmodel.models.layers import Int8Linear, apply_layers, set_dtype
from bigmodel.models.mlp import MLP, Standardize
from bigmodel.models.transformer import SIZES, VOCAB, Transformer

__all__ = [
    "MLP",
    "SIZES",
    "Standardize",
    "Transformer",
    "build_model",
    "count_params",
    "example_input",
    "mlp_architecture",
    "transformer_architecture",
]


def mlp_architecture(
    in_features: int, out_features: int, hidden: list[int], activation: str = "relu", dropout: float = 0.0
) -> dict[str, Any]:
    return {
        "name": "mlp",
        "in_features": in_features,
        "out_features": out_features,
        "hidden": list(hidden),
        "activation": activation,
        "dropout": dropout,
    }


def transformer_architecture(size: str, context: int, dropout: float = 0.0) -> dict[str, Any]:
    layers, width, heads = SIZES[size]
    return {
        "name": "transformer",
        "size": size,
        "layers": layers,
        "width": width,
        "heads": heads,
        "context": context,
        "vocab": VOCAB,
        "dropout": dropout,
    }


def build_model(arch: dict[str, Any]) -> nn.Module:
    """Rebuild the module an architecture dict describes (weights are loaded separately).

    Compression may add ``compact`` (module path -> compact kind: sparse, int8) and ``dtype``
    (float16, bfloat16); see ``bigmodel.models.layers``."""
    name = arch.get("name")
    model: nn.Module
    if name == "mlp":
        model = MLP(
            arch["in_features"],
            arch["out_features"],
            arch["hidden"],
            arch.get("activation", "relu"),
            arch.get("dropout", 0.0),
        )
    elif name == "transformer":
        model = Transformer(
            arch["layers"],
            arch["width"],
            arch["heads"],
            arch["context"],
            arch.get("vocab", VOCAB),
            arch.get("dropout", 0.0),
        )
    elif name == "sentence_encoder":
        from bigmodel.models.sentence import SentenceEncoder

        model = SentenceEncoder(arch["bert"])
    else:
        raise BigModelError(f"unknown model '{name}' (known: mlp, transformer, sentence_encoder)")
    apply_layers(model, arch.get("compact") or {})
    if arch.get("dtype"):
        set_dtype(model, arch["dtype"])
    return model


def example_input(
    arch: dict[str, Any], batch: int, *, mean: list[float] | None = None, std: list[float] | None = None
) -> torch.Tensor:
    """A batch of plausible raw inputs for a family (for export and benchmarks): (B, F) float32
    for an MLP, (B, context) int64 byte tokens for a transformer."""
    if arch.get("name") == "transformer":
        return torch.randint(0, arch.get("vocab", VOCAB), (batch, arch["context"]))
    if arch.get("name") == "mlp":
        x = torch.randn(batch, arch["in_features"])
        if mean is not None and std is not None:
            x = x * torch.tensor(std) + torch.tensor(mean)
        return x
    raise BigModelError(f"no example input for model '{arch.get('name')}'")


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
