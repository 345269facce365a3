"""A client: local training on its own shard, in plain PyTorch; what leaves it is weights only.

``local_update`` is the algorithm (FedAvg / FedProx / FedSGD local step); ``Client`` wraps it in
Flower's NumPyClient so the same object serves an in-process simulation and a client process
talking to the server over gRPC.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.client import NumPyClient
from torch import nn

from bigmodel import tasks
from bigmodel.models import build_model, set_standardization
from bigmodel.tasks import TaskSpec


@dataclass(frozen=True)
class LocalPlan:
    """What one client does with the global weights in one round."""

    strategy: str  # fedavg | fedprox | fedsgd
    epochs: int
    batch_size: int
    lr: float
    mu: float  # fedprox only
    seed: int


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The trainable parameters, in module order: what is exchanged. The Standardize buffers are
    fixed statistics that both sides set from the dataset manifest, so they never travel."""
    return [p.detach().cpu().numpy().copy() for p in model.parameters()]


@torch.no_grad()
def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    params = list(model.parameters())
    if len(params) != len(weights):
        raise ValueError(f"expected {len(params)} weight tensors, got {len(weights)}")
    for p, w in zip(params, weights, strict=True):
        p.copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)).reshape(p.shape))


def proximal_term(model: nn.Module, anchor: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx: mu/2 * ||w - w_global||^2, which pulls local steps back towards the global model."""
    sq = [((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True)]
    return 0.5 * mu * torch.stack(sq).sum()


def local_update(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: TaskSpec, plan: LocalPlan, rnd: int
) -> float:
    """Train ``model`` (holding the global weights) on this client's rows; return the mean loss.

    fedsgd: one gradient step on the whole shard (E=1, B=inf in McMahan et al.); fedavg: ``epochs``
    passes of minibatch SGD; fedprox: the same with the proximal term added to every step.
    """
    n = len(x)
    opt = torch.optim.SGD(model.parameters(), lr=plan.lr)
    model.train()
    if plan.strategy == "fedsgd":
        opt.zero_grad(set_to_none=True)
        loss = tasks.loss_sum(spec, model(x), y) / n
        loss.backward()
        opt.step()
        return float(loss.detach())
    anchor = [p.detach().clone() for p in model.parameters()] if plan.strategy == "fedprox" else []
    g = torch.Generator().manual_seed(plan.seed * 1_000_003 + rnd)
    total, seen = 0.0, 0
    for _ in range(plan.epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, plan.batch_size):
            idx = perm[i : i + plan.batch_size]  # (b,)
            opt.zero_grad(set_to_none=True)
            loss = tasks.loss_sum(spec, model(x[idx]), y[idx]) / len(idx)
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            if anchor:
                loss = loss + proximal_term(model, anchor, plan.mu)
            loss.backward()
            opt.step()
    return total / max(seen, 1)


class Client(NumPyClient):
    """One federated participant. ``fault`` makes it misbehave on purpose (for robustness tests):
    ``nan`` returns NaN weights, ``huge`` returns weights blown up far past any honest update,
    ``crash`` dies in the middle of its second round (the process exits; in-process it raises)."""

    def __init__(
        self,
        cid: int,
        x: np.ndarray,
        y: np.ndarray,
        spec: TaskSpec,
        arch: dict[str, Any],
        mean: list[float],
        std: list[float],
        plan: LocalPlan,
        fault: str | None = None,
        in_process: bool = True,
    ):
        self.cid = cid
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.spec, self.plan, self.fault, self.in_process = spec, plan, fault, in_process
        self.model = build_model(arch)
        set_standardization(self.model, mean, std)

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return get_weights(self.model)

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        rnd = int(config.get("round", 0))
        if self.fault == "crash" and rnd >= 2:
            if not self.in_process:
                os._exit(3)  # a client process dying mid-round, as a killed one would
            raise RuntimeError(f"client {self.cid} crashed (injected fault)")
        set_weights(self.model, parameters)
        loss = local_update(self.model, self.x, self.y, self.spec, self.plan, rnd)
        weights = get_weights(self.model)
        if self.fault == "nan":
            weights[0][...] = np.nan
        elif self.fault == "huge":
            weights = [w * 1e6 for w in weights]
        return weights, len(self.x), {"cid": self.cid, "train_loss": loss}

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        set_weights(self.model, parameters)
        self.model.eval()
        with torch.no_grad():
            m = tasks.metrics(self.spec, self.model(self.x), self.y)
        return m["loss"], len(self.x), {k: v for k, v in m.items() if k != "loss"}
