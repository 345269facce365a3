"""The multilayer perceptron: plain PyTorch, no knowledge of training or distribution."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
}


class Standardize(nn.Module):
    """``(x - mean) / std`` with the training statistics as buffers, so the saved model (and its
    ONNX export) takes raw features and clients never have to know the statistics."""

    def __init__(self, features: int):
        super().__init__()
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, F)
        return (x - self.mean) / self.std


class MLP(nn.Module):
    """Standardize -> [Linear -> activation (-> Dropout)] * len(hidden) -> Linear (logits).

    The default, hidden=[10, 10] with one output, is the classic reference network
    Dense(10, relu) -> Dense(10, relu) -> Dense(1, sigmoid): the sigmoid lives in the loss
    (BCE with logits) and in prediction, which is numerically safer and otherwise the same.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: list[int] | tuple[int, ...] = (10, 10),
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.norm = Standardize(in_features)
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, out)
        return self.net(self.norm(x))
