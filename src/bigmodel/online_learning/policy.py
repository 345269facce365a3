"""The promotion policy: the only thing in bigmodel that moves an alias on its own.

Two models see every labelled row: the *serving* model (the version the alias points at, frozen)
and the *learner* (a copy of it that takes one SGD step per row). Each row is scored by both
*before* the learner trains on it (prequential, test-then-train). The *window* holds the scores
of the most recent rows (at most ``window``), and is emptied whenever either model is replaced or
a drift is detected, since older rows then say nothing about the models now.

Every ``check_every`` rows, once the window holds at least ``min_samples`` rows, one decision:

1. Probation (only right after a promotion): the previous version was scored beside the new one;
   if the new one is worse than the previous one by ``margin``, **rollback**: the alias moves back
   to the previous version and the learner restarts from it. Otherwise the promotion is confirmed.
2. If the learner beats the serving model by ``margin``, **promote**: the learner is registered as
   a new version (lineage ``online``, parent the serving version) and the alias moves to it, if
   and only if the alias still points at the serving version (an operator's move always wins:
   the learner then restarts from the operator's version).
3. If the learner is worse than the serving model by ``margin`` over a full window (``window``
   rows, so not by chance on a few), **reset**: the learner restarts from the serving model (its
   updates went astray).
4. Otherwise **keep**.

"Beats by margin": classification: window accuracy at least ``margin`` higher (0.02 = 2 points);
regression: window mean squared error at most ``(1 - margin)`` times the other's.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bigmodel.online_learning.detect import DetectorName

Decision = Literal["promote", "rollback", "confirm", "reset", "keep"]


class OnlineConfig(BaseModel):
    """Online learning settings (see the module docstring for how they are used)."""

    model_config = ConfigDict(extra="forbid")

    alias: str = "production"  # the alias the policy moves
    window: int = Field(500, ge=10)  # rows in the comparison window (most recent)
    min_samples: int = Field(200, ge=10)  # rows in the window before any decision
    check_every: int = Field(50, ge=1)  # rows between decisions
    margin: float = Field(0.02, ge=0.0, lt=1.0)
    lr: float = Field(0.03, gt=0.0)  # SGD learning rate of the learner
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    detector: DetectorName = "adwin"
    drift_delta: float = Field(0.002, gt=0.0, lt=1.0)  # ADWIN confidence
    ph_threshold: float = Field(25.0, gt=0.0)  # Page-Hinkley lambda (on a 0/1 error stream)
    publish: bool = True  # False: evaluate and decide, but write nothing to the registry

    @model_validator(mode="after")
    def _sizes(self) -> OnlineConfig:
        if self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) must not exceed window ({self.window})")
        return self


def better(task: str, a: float, b: float, margin: float) -> bool:
    """Is score ``a`` better than ``b`` by ``margin``? Scores are accuracy (classification, higher
    is better) or mean squared error (regression, lower is better)."""
    if task == "regression":
        return a <= (1.0 - margin) * b and a < b
    return a >= b + margin and a > b


def decide(
    task: str,
    margin: float,
    *,
    serving: float,
    learner: float,
    previous: float | None = None,
) -> Decision:
    """One decision from window scores (``previous``: the version before a promotion on probation)."""
    if previous is not None:
        if better(task, previous, serving, margin):
            return "rollback"
        return "confirm"
    if better(task, learner, serving, margin):
        return "promote"
    if better(task, serving, learner, margin):
        return "reset"
    return "keep"
