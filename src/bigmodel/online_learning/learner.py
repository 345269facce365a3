"""The online learner: prequential evaluation, per-row SGD on a copy of the serving model, a drift
detector on the serving model's errors, and the promotion policy (``bigmodel.online_learning.policy``).

``OnlineLearner.learn(x, y)`` takes a chunk of labelled rows; the CLI feeds it a file or stdin and
the server feeds it from the feedback route's queue, on a thread of its own. Decisions reach the
registry through a ``Publisher`` (none: decide and report, write nothing).
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bigmodel import artifacts, tasks
from bigmodel.artifacts import LoadedModel, ModelMeta
from bigmodel.errors import BigModelError
from bigmodel.online_learning.detect import ADWIN, Detector, PageHinkley
from bigmodel.online_learning.policy import OnlineConfig, decide
from bigmodel.tasks import TaskSpec


class Publisher:
    """Registers versions and moves one alias of one model, and only on the policy's say."""

    def __init__(self, registry: Any, name: str, alias: str):
        self.registry, self.name, self.alias = registry, name, alias

    def alias_version(self) -> int | None:
        return self.registry.aliases(self.name).get(self.alias)

    def start_version(self) -> int:
        """What the learner starts from: the alias's version, else the latest version."""
        from bigmodel.registry import Ref

        return self.alias_version() or int(self.registry.version_of(Ref(self.name)))

    def load(self, version: int) -> LoadedModel:
        from bigmodel.registry import Ref

        return artifacts.load_model(self.registry.resolve(Ref(self.name, version=version)))

    def promote(self, module: nn.Module, meta: ModelMeta, parent: int, info: dict[str, Any]) -> int | None:
        """Register ``module`` as the next version and move the alias to it from ``parent``.

        Returns the new version, or None (and registers nothing) when the alias no longer points
        at ``parent``: someone else moved it, and their choice stands."""
        if self.alias_version() not in (parent, None):
            return None
        from bigmodel.registry import Ref

        record = self.registry.show(Ref(self.name, version=parent))
        new_meta = ModelMeta(
            architecture=meta.architecture,
            task=meta.task,
            features=meta.features,
            label=meta.label,
            preprocessing=meta.preprocessing,
            config=meta.config,
            dataset=meta.dataset,
            metrics=info["metrics"],
            lineage=artifacts.Lineage(
                method="online",
                parent={"path": f"{self.name}:{parent}", "digest": record["digest"]},
                params=info["params"],
                data_manifest_hash=meta.lineage.data_manifest_hash,
            ),
        )
        with tempfile.TemporaryDirectory(prefix="bigmodel-online-") as tmp:
            artifacts.write_model_dir(Path(tmp) / "model", module, new_meta)
            version = int(self.registry.register(Path(tmp) / "model", self.name)["version"])
        expect = self.alias_version()
        if expect not in (parent, None) or not self.registry.move_alias(
            self.name, self.alias, version, expect=expect
        ):
            return None  # registered, but the alias stays where the operator put it
        return version

    def rollback(self, to: int, expect: int) -> bool:
        return bool(self.registry.move_alias(self.name, self.alias, to, expect=expect))


class OnlineLearner:
    """Test-then-train on every row; a decision every ``check_every`` rows (see ``policy``)."""

    def __init__(
        self,
        serving: LoadedModel,
        version: int | None,
        cfg: OnlineConfig,
        publisher: Publisher | None = None,
        *,
        curve_every: int = 100,
    ):
        self.cfg, self.publisher = cfg, publisher
        self.meta: ModelMeta = serving.meta
        self.spec: TaskSpec = serving.spec
        self.rows = 0
        self.window: deque[tuple[float, float, float]] = deque(maxlen=cfg.window)
        self.totals = np.zeros(2)  # summed scores over the stream: serving, learner
        self.events: deque[dict[str, Any]] = deque(maxlen=1000)
        self.counts: Counter[str] = Counter()
        self.curve: list[list[float]] = []  # [row, serving score, learner score] per curve_every rows
        self.curve_every = curve_every
        self._bucket = np.zeros(3)  # rows, serving, learner since the last curve point
        self._since_check = 0
        self.started = time.time()
        self._adopt(serving.module, version)

    # ---- state changes -------------------------------------------------------------------------

    def _adopt(self, module: nn.Module, version: int | None) -> None:
        """Serve ``module`` (frozen) and restart the learner from a copy of it."""
        self.serving = _frozen(module)
        self.version = version
        self.learner = copy.deepcopy(self.serving).requires_grad_(True)
        why = not_learnable(self.meta)
        if why:
            raise BigModelError(why)
        if not any(p.is_floating_point() for p in self.learner.parameters()):
            # an int8 model keeps its weights as integer buffers: SGD has nothing to update
            where = f"version {version}" if version is not None else "this model"
            raise BigModelError(
                f"{where} has no float weights to learn from feedback (method "
                f"{self.meta.lineage.method}); start online learning from a float version, e.g. its parent"
            )
        self.opt = torch.optim.SGD(self.learner.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum)
        self.previous: nn.Module | None = None
        self.previous_version: int | None = None
        self.window.clear()
        self.detector: Detector = self._detector()

    def _detector(self) -> Detector:
        if self.cfg.detector == "adwin":
            return ADWIN(delta=self.cfg.drift_delta)
        return PageHinkley(threshold=self.cfg.ph_threshold, mode="up")  # only more errors matter

    def _event(self, kind: str, **detail: Any) -> dict[str, Any]:
        e = {"event": kind, "row": self.rows, "version": self.version, **detail}
        self.events.append(e)
        self.counts[kind] += 1
        return e

    # ---- the stream ----------------------------------------------------------------------------

    def learn(self, x: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
        """Score rows ``x`` (N, F raw features) with labels ``y`` (codes or targets) with both
        models, then train the learner on each; returns the events (drift, decisions) they caused."""
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))  # (N, F)
        yt = torch.from_numpy(y.astype(np.int64 if self.spec.task == "multiclass" else np.float32))
        out: list[dict[str, Any]] = []
        i = 0
        while i < len(xt):
            # a segment ends at the next decision, so the frozen models score it in one pass
            j = min(len(xt), i + self.cfg.check_every - self._since_check)
            xs, ys = xt[i:j], yt[i:j]
            with torch.no_grad():
                s_serve = self._scores(self.serving(xs), ys)  # (m,)
                s_prev = (
                    self._scores(self.previous(xs), ys)
                    if self.previous is not None
                    else np.full(len(xs), math.nan)
                )
            s_learn = np.empty(len(xs))
            for k in range(len(xs)):  # test, then train: one SGD step per row
                logits = self.learner(xs[k : k + 1])  # (1, out)
                s_learn[k] = self._scores(logits.detach(), ys[k : k + 1])[0]
                loss = tasks.loss_sum(self.spec, logits, ys[k : k + 1])
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
            out += self._account(s_serve, s_learn, s_prev)
            self._since_check += len(xs)
            if self._since_check >= self.cfg.check_every:
                self._since_check = 0
                out += self._check()
            i = j
        return out

    def _scores(self, logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """Per row: 1/0 correct (classification) or squared error in standardized target units."""
        if self.spec.task == "binary":
            return ((logits[:, 0] > 0).float() == y).double().numpy()
        if self.spec.task == "multiclass":
            return (logits.argmax(dim=1) == y).double().numpy()
        z = (y - self.spec.target_mean) / self.spec.target_std
        return ((logits[:, 0] - z) ** 2).double().numpy()

    def _error(self, score: float) -> float:
        return score if self.spec.task == "regression" else 1.0 - score

    def _account(self, s_serve: np.ndarray, s_learn: np.ndarray, s_prev: np.ndarray) -> list[dict[str, Any]]:
        out = []
        self.totals += [s_serve.sum(), s_learn.sum()]
        for a, b, c in zip(s_serve.tolist(), s_learn.tolist(), s_prev.tolist(), strict=True):
            self.rows += 1
            self.window.append((a, b, c))
            self._bucket += [1, a, b]
            if self._bucket[0] == self.curve_every:
                self.curve.append(
                    [self.rows, self._bucket[1] / self._bucket[0], self._bucket[2] / self._bucket[0]]
                )
                self._bucket[:] = 0
            self.detector.update(self._error(a))
            if self.detector.drift_detected:
                out.append(self._event("drift"))
                self.window.clear()  # rows before the change say nothing about the models now
        return out

    def window_scores(self) -> tuple[float, float, float]:
        """Mean score of the serving model, the learner and the previous version over the window."""
        if not self.window:
            return math.nan, math.nan, math.nan
        w = np.asarray(self.window)  # (n, 3)
        return float(w[:, 0].mean()), float(w[:, 1].mean()), float(w[:, 2].mean())

    # ---- decisions -----------------------------------------------------------------------------

    def _check(self) -> list[dict[str, Any]]:
        if self.publisher is not None and self.cfg.publish:
            moved = self.publisher.alias_version()
            if moved is not None and moved != self.version:
                return [self._external(moved)]
        if len(self.window) < self.cfg.min_samples:
            return []
        serving, learner, previous = self.window_scores()
        task, margin = self.spec.task, self.cfg.margin
        out = []
        if self.previous is not None:
            if decide(task, margin, serving=serving, learner=learner, previous=previous) == "rollback":
                return [self._rollback(serving, previous)]
            out.append(self._event("confirm", serving=serving, previous=previous, rows=len(self.window)))
            self.previous, self.previous_version = None, None
        d = decide(task, margin, serving=serving, learner=learner)
        if d == "promote":
            out.append(self._promote(serving, learner))
        elif d == "reset" and len(self.window) == self.cfg.window:  # a whole window behind, not noise
            out.append(self._event("reset", serving=serving, learner=learner, rows=len(self.window)))
            self._adopt_keep_previous()
        else:
            self.counts["keep"] += 1
        return out

    def _adopt_keep_previous(self) -> None:
        self.learner = copy.deepcopy(self.serving).requires_grad_(True)
        self.opt = torch.optim.SGD(self.learner.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum)
        self.window.clear()

    def _info(self, serving: float, learner: float) -> dict[str, Any]:
        metric = "prequential_mse" if self.spec.task == "regression" else "prequential_accuracy"
        return {
            "metrics": {metric: learner, "window_rows": float(len(self.window))},
            "params": {
                "rows_seen": self.rows,
                "window": self.cfg.window,
                "margin": self.cfg.margin,
                "lr": self.cfg.lr,
                "detector": self.cfg.detector,
                f"parent_window_{metric}": serving,
            },
        }

    def _promote(self, serving: float, learner: float) -> dict[str, Any]:
        snapshot = _frozen(copy.deepcopy(self.learner))
        parent = self.version
        version: int | None = None
        if self.publisher is not None and self.cfg.publish and parent is not None:
            version = self.publisher.promote(snapshot, self.meta, parent, self._info(serving, learner))
            if version is None:
                moved = self.publisher.alias_version()
                assert moved is not None  # promote refuses only when someone set the alias
                return self._external(moved)
        self.previous, self.previous_version = self.serving, parent
        self.serving, self.version = snapshot, version
        self.window.clear()
        self.detector = self._detector()  # a new serving model has errors of its own
        return self._event("promote", parent=parent, serving=serving, learner=learner)

    def _rollback(self, serving: float, previous: float) -> dict[str, Any]:
        assert self.previous is not None
        back, current = self.previous_version, self.version
        if self.publisher is not None and self.cfg.publish and back is not None and current is not None:
            moved = None if self.publisher.rollback(back, expect=current) else self.publisher.alias_version()
            if moved is not None:
                return self._external(moved)
        self._adopt(self.previous, back)
        return self._event("rollback", rolled_back=current, serving=serving, previous=previous)

    def _external(self, version: int) -> dict[str, Any]:
        """The alias was moved by someone else: their version is served now; start from it."""
        assert self.publisher is not None
        self._adopt(self.publisher.load(version).module, version)
        return self._event("restart", reason="the alias was moved outside the online policy")

    # ---- reporting -----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        metric = "mse" if self.spec.task == "regression" else "accuracy"
        n = max(self.rows, 1)
        serving, learner, _ = self.window_scores()
        return {
            "rows": self.rows,
            "metric": metric,
            "prequential": {"serving": float(self.totals[0] / n), "learner": float(self.totals[1] / n)},
            "window": {"rows": len(self.window), "serving": serving, "learner": learner},
            "version": self.version,
            "on_probation": self.previous is not None,
            "drifts": self.counts["drift"],
            "promotions": self.counts["promote"],
            "rollbacks": self.counts["rollback"],
            "resets": self.counts["reset"],
            "restarts": self.counts["restart"],
            "events": list(self.events),
        }


def not_learnable(meta: ModelMeta) -> str | None:
    """Why online learning cannot update this model (model.json's ``meta``), or None."""
    from bigmodel.models.arch import int8_layers, parse_architecture

    arch = parse_architecture(meta.architecture)
    if not arch.supports.online:
        return f"online learning handles tabular (mlp) models, not a {arch.name} model"
    if int8_layers(arch):
        return (
            "an int8 model keeps its weights as integers, which learning from feedback cannot update: "
            "follow a float version (e.g. its parent) instead"
        )
    return None


def _frozen(module: nn.Module) -> nn.Module:
    # eval(): no dropout in scores or updates; the learner is made trainable again by its copier
    return module.eval().requires_grad_(False)


def describe(e: dict[str, Any]) -> str:
    """One line for people about an event."""
    kind, row = e["event"], e["row"]
    if kind == "drift":
        return f"row {row}: drift detected in the serving model's errors"
    if kind == "promote" and e["version"] is None:
        return f"row {row}: the learner would be promoted (dry run: nothing registered)"
    if kind == "promote":
        return (
            f"row {row}: promoted: version {e['version']} (learner {e['learner']:.3f} vs serving "
            f"{e['serving']:.3f} on the window), alias moved from {e['parent']}"
        )
    if kind == "rollback":
        return f"row {row}: rolled back from version {e['rolled_back']} to {e['version']}"
    if kind == "reset":
        return f"row {row}: learner reset to version {e['version']} (it fell behind by the margin)"
    if kind == "confirm":
        return f"row {row}: version {e['version']} confirmed (no worse than the one before it)"
    return f"row {row}: {kind}: {e.get('reason', '')} (now version {e['version']})"
