"""The typed config of a federated run: data, model, partition, strategy, robustness and privacy."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bigmodel.config import _one_line
from bigmodel.errors import BigModelError

Fault = Literal["nan", "huge", "crash"]


class FederatedConfig(BaseModel):
    """``bigmodel federated``: K clients each hold a shard of the training split and never send it.

    Strategies: ``fedavg`` (McMahan et al. 2017: E local epochs of minibatch SGD, weighted average
    of the returned weights), ``fedprox`` (the same plus the proximal term mu/2 ||w - w_global||^2
    in each local step, Li et al. 2020) and ``fedsgd`` (one full-batch gradient step per client and
    round: the baseline FedAvg is measured against).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    dataset: str = "digits"  # built-in name or prepared dataset folder
    model: Literal["mlp"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [64])
    activation: Literal["relu", "gelu", "tanh", "sigmoid", "silu"] = "relu"
    clients: int = Field(10, ge=1, le=10000)
    rounds: int = Field(10, ge=1)
    fraction: float = Field(1.0, gt=0.0, le=1.0)  # clients sampled per round
    partition: str = "iid"  # iid | dirichlet:ALPHA (label skew; small alpha = very non-IID)
    strategy: Literal["fedavg", "fedprox", "fedsgd"] = "fedavg"
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(10, ge=1)  # local minibatch (fedsgd: the whole shard)
    lr: float = Field(0.05, gt=0.0)  # client SGD learning rate
    mu: float = Field(0.01, ge=0.0)  # fedprox proximal weight
    # robustness: a client whose update (its weights minus the global weights) is not finite, or
    # whose L2 norm exceeds max_update_norm or norm_outlier_factor x the round's median norm, is
    # left out of the round and logged
    max_update_norm: float | None = Field(None, gt=0.0)
    norm_outlier_factor: float | None = Field(10.0, gt=1.0)
    # central differential privacy (DP-FedAvg with fixed clipping, McMahan et al. 2018): each update
    # is clipped to dp_clip, the average is uniform, and Gaussian noise of std
    # dp_noise * dp_clip / clients-in-round is added to it
    dp_clip: float | None = Field(None, gt=0.0)
    dp_noise: float = Field(0.0, ge=0.0)
    mode: Literal["simulate", "processes"] = "simulate"
    round_timeout_s: float = Field(120.0, gt=0.0)  # a client slower than this is dropped from the round
    connect_timeout_s: float = Field(120.0, gt=0.0)  # processes: wait this long for clients at start
    target_accuracy: float | None = Field(None, gt=0.0, le=1.0)  # stop once validation reaches it
    seed: int = 0
    out: str | None = None  # the run and model directory (default runs/federated-<data>-<time>)
    faults: dict[int, Fault] = Field(default_factory=dict)  # testing: client id -> injected fault
    progress: bool = True

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(h <= 0 for h in v):
            raise ValueError(f"hidden sizes must be positive, got {v}")
        return v

    @field_validator("partition")
    @classmethod
    def _partition(cls, v: str) -> str:
        parse_partition(v)
        return v

    @model_validator(mode="after")
    def _checks(self) -> FederatedConfig:
        if self.dp_noise > 0 and self.dp_clip is None:
            raise ValueError("dp_noise needs dp_clip (the noise is scaled to the clipping norm)")
        bad = [c for c in self.faults if not 0 <= c < self.clients]
        if bad:
            raise ValueError(f"faults names client {bad[0]}, but clients are 0..{self.clients - 1}")
        return self


def parse_partition(text: str) -> tuple[str, float]:
    """``iid`` -> ("iid", 0); ``dirichlet:0.5`` -> ("dirichlet", 0.5)."""
    kind, _, arg = text.partition(":")
    if kind == "iid" and not arg:
        return "iid", 0.0
    if kind == "dirichlet":
        try:
            alpha = float(arg)
        except ValueError:
            raise ValueError(f"partition {text!r}: dirichlet needs a number, e.g. dirichlet:0.5") from None
        if not alpha > 0:
            raise ValueError(f"partition {text!r}: the Dirichlet alpha must be > 0")
        return "dirichlet", alpha
    raise ValueError(f"partition {text!r}: expected iid or dirichlet:ALPHA")


def validate(data: dict[str, Any]) -> FederatedConfig:
    """A FederatedConfig from a dict, with pydantic errors as one-line BigModelErrors."""
    try:
        return FederatedConfig.model_validate(data)
    except ValidationError as err:
        raise BigModelError(_one_line(err, FederatedConfig)) from None


def clients_per_round(clients: int, fraction: float) -> int:
    """How many of ``clients`` a round samples at ``fraction`` (C): ceil(C * K), at least 1."""
    return max(1, math.ceil(fraction * clients - 1e-9))  # 1e-9: 0.3 * 10 is 3.0000000000000004
