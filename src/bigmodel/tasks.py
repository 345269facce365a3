"""What a task means for a model's outputs: the loss, the metrics, and how logits become answers.

Shared by training, evaluation, compression and serving so that "accuracy" and "probability" mean
the same thing everywhere. Outputs are logits: (B, 1) for binary and regression, (B, K) multiclass,
(B, T, V) for ``lm`` (next-token prediction at every position; targets (B, T) token ids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

TaskName = Literal["binary", "multiclass", "regression", "lm"]


@dataclass(frozen=True)
class TaskSpec:
    task: TaskName
    num_outputs: int
    label_values: list[Any] | None = None  # classification: the original label of each code
    target_mean: float = 0.0  # regression: the model predicts (y - mean) / std
    target_std: float = 1.0

    @property
    def primary_metric(self) -> str:
        """The metric compression and the registry compare (higher is better)."""
        return "r2" if self.task == "regression" else "accuracy"

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "num_outputs": self.num_outputs,
            "label_values": self.label_values,
            "target_mean": self.target_mean,
            "target_std": self.target_std,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TaskSpec:
        return cls(
            d["task"],
            d["num_outputs"],
            d.get("label_values"),
            d.get("target_mean", 0.0),
            d.get("target_std", 1.0),
        )


def loss_sum(spec: TaskSpec, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed (not mean) per-row loss: callers divide by the global batch's rows, which makes
    N workers' averaged gradients equal one worker's even when shards are unequal."""
    if spec.task == "binary":
        return F.binary_cross_entropy_with_logits(logits[:, 0], y, reduction="sum")
    if spec.task == "multiclass":
        return F.cross_entropy(logits, y, reduction="sum")
    if spec.task == "lm":  # a row's loss is its mean over positions, so a row weighs the same as elsewhere
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum") / y.shape[1]
    return F.mse_loss(logits[:, 0], (y - spec.target_mean) / spec.target_std, reduction="sum")


def distill_loss_sum(
    spec: TaskSpec,
    student: torch.Tensor,
    teacher: torch.Tensor,
    y: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton et al. (2015): ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * task loss``,
    summed over rows like ``loss_sum``. T^2 keeps the soft part's gradients on the scale of the hard
    part's as T grows. Regression distils by matching the teacher's (normalised) outputs."""
    hard = loss_sum(spec, student, y)
    t = temperature
    if spec.task == "multiclass":
        soft = F.kl_div(
            F.log_softmax(student / t, dim=1),
            F.log_softmax(teacher / t, dim=1),
            log_target=True,
            reduction="sum",
        )
    elif spec.task == "lm":  # (B, T, V): each position's next-byte distribution, a row its mean (as loss_sum)
        soft = (
            F.kl_div(
                F.log_softmax(student.flatten(0, 1).float() / t, dim=1),
                F.log_softmax(teacher.flatten(0, 1).float() / t, dim=1),
                log_target=True,
                reduction="sum",
            )
            / y.shape[1]
        )
    elif spec.task == "binary":
        p = torch.sigmoid(teacher[:, 0] / t)
        # KL of two Bernoullis = cross-entropy - the teacher's entropy
        soft = F.binary_cross_entropy_with_logits(
            student[:, 0] / t, p, reduction="sum"
        ) - F.binary_cross_entropy_with_logits(teacher[:, 0] / t, p, reduction="sum")
    else:
        return alpha * F.mse_loss(student, teacher, reduction="sum") + (1 - alpha) * hard
    return alpha * t * t * soft + (1 - alpha) * hard


# Sums kept per evaluation, in float64 so that they can be all-reduced and added exactly:
# classification: [loss, rows, correct]; regression: [loss, rows, sse, sae, sum_y, sum_y2]
def new_sums(spec: TaskSpec) -> torch.Tensor:
    return torch.zeros(6 if spec.task == "regression" else 3, dtype=torch.float64)


@torch.no_grad()
def update_sums(spec: TaskSpec, sums: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
    logits = logits.float()
    sums[0] += float(loss_sum(spec, logits, y))
    sums[1] += len(y)
    if spec.task == "binary":
        sums[2] += float(((logits[:, 0] > 0).float() == y).sum())
    elif spec.task == "multiclass":
        sums[2] += float((logits.argmax(dim=1) == y).sum())
    elif spec.task == "lm":
        sums[2] += float((logits.argmax(dim=2) == y).sum()) / max(y.shape[1], 1)
    else:
        pred = logits[:, 0].double() * spec.target_std + spec.target_mean
        err = pred - y.double()
        sums[2] += float((err**2).sum())
        sums[3] += float(err.abs().sum())
        sums[4] += float(y.double().sum())
        sums[5] += float((y.double() ** 2).sum())


def finalize(spec: TaskSpec, sums: torch.Tensor) -> dict[str, float]:
    s = sums.tolist()
    n = max(s[1], 1.0)
    if spec.task == "lm":  # loss in nats per token; bits per byte is the usual yardstick
        loss = s[0] / n
        return {
            "loss": loss,
            "accuracy": s[2] / n,
            "perplexity": math.exp(min(loss, 50.0)),
            "bits_per_byte": loss / math.log(2),
        }
    if spec.task != "regression":
        return {"loss": s[0] / n, "accuracy": s[2] / n}
    mse = s[2] / n
    var = s[5] / n - (s[4] / n) ** 2
    return {
        "loss": s[0] / n,
        "mse": mse,
        "rmse": mse**0.5,
        "mae": s[3] / n,
        "r2": 1.0 - mse / var if var > 0 else 0.0,
    }


def metrics(spec: TaskSpec, logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    sums = new_sums(spec)
    update_sums(spec, sums, logits, y)
    return finalize(spec, sums)


@torch.no_grad()
def postprocess(spec: TaskSpec, logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits -> what a client wants: ``probabilities`` (B, K) and ``label_codes`` (B,) for
    classification (K=2 for binary: [P(code 0), P(code 1)]), ``predictions`` (B,) for regression;
    for ``lm`` the distribution of the token after the last position."""
    if spec.task == "lm":
        logits = logits[:, -1, :]  # (B, V)
    if spec.task == "regression":
        return {"predictions": logits[:, 0] * spec.target_std + spec.target_mean}
    if spec.task == "binary":
        p1 = torch.sigmoid(logits[:, 0])
        probs = torch.stack([1 - p1, p1], dim=1)
    else:
        probs = torch.softmax(logits, dim=1)
    return {"probabilities": probs, "label_codes": probs.argmax(dim=1)}


def labels_of(spec: TaskSpec, codes: torch.Tensor) -> list[Any]:
    values = spec.label_values or []
    return [values[i] if i < len(values) else i for i in codes.tolist()]
