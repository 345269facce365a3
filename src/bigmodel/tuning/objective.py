"""One trial of ``bigmodel tune``: the sampled knobs, a real ``train`` run reporting every epoch to
the pruner, the compression the trial chose, and the measured artifact.

Objectives, each a number per trial:
- ``metric``: the model's primary validation metric (accuracy for classes, r2 for regression, bits per
  byte for a language model), of the artifact the trial produced (the student, pruned or int8 one, if
  any);
- ``loss``: the validation loss of the trained model (no compression: a loss is not measured on an
  int8 artifact);
- ``latency``: ms of one batch-1 forward of that artifact, 1 thread (the median of 50 calls, the
  fastest of 7 such rounds);
- ``size``: the bytes it serves from on disk.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from bigmodel.errors import BigModelError
from bigmodel.tuning import space as sp
from bigmodel.tuning.study import mark_owner

OBJECTIVES = ("metric", "loss", "latency", "size")
STEPS = ("distilled", "pruned", "int8")  # the compression steps' folder suffixes, in their order
METRIC = {"mlp": ("accuracy / r2", "maximize"), "transformer": ("bits_per_byte", "minimize")}


def direction(objective: str, family: str) -> str:
    if objective == "metric":
        return METRIC[family][1]
    return "minimize"  # loss, latency, size


@dataclass(frozen=True)
class Setup:
    """Everything a trial needs that is the same for every trial of this process."""

    family: sp.Family
    base: dict[str, Any]  # the training config as a dict, without the space
    space: dict[str, sp.Param]
    objectives: tuple[str, ...]
    runs: Path  # each trial's model directory goes to runs/trial-<number>
    pruning: bool
    progress: bool
    # where the study lives: a trial trained by several worker processes reports from its rank 0
    storage: str | None = None
    study: str = ""
    pruner: str = "none"


@dataclass
class Reporter:
    """``on_epoch`` of a trial: each epoch's primary value to the pruner, and whether to go on.
    With ``--workers N`` it runs in the trial's rank-0 worker process, which opens the study from
    its storage (so it pickles without the live trial); with one worker it uses the live trial."""

    setup: Setup
    trial_id: int
    max_epochs: int
    trial: optuna.Trial | None = None
    pruned_at: int = 0  # the epoch after which the pruner stopped the trial (asked once: it keeps state)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "trial": None}

    def __call__(self, epoch: int, metrics: dict[str, float]) -> bool:
        from bigmodel.tuning import study as st

        if self.trial is None:
            storage = st.open_storage(self.setup.storage, create=False)
            pruner = st.make_pruner(self.setup.pruner, self.max_epochs)  # type: ignore[arg-type]
            study = optuna.load_study(study_name=self.setup.study, storage=storage, pruner=pruner)
            self.trial = optuna.Trial(study, self.trial_id)
        self.trial.set_user_attr("epochs", epoch)
        if not self.setup.pruning:
            return True
        self.trial.report(_primary(self.setup.objectives[0], metrics), step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            self.trial.set_user_attr("pruned_at", epoch)  # read back by the tune process
        return not self.pruned_at


def run_trial(trial: optuna.Trial, setup: Setup) -> float | tuple[float, ...]:
    """Train (and compress) what the trial samples; return its objective values."""
    from bigmodel import config
    from bigmodel.training import train

    mark_owner(trial)
    values = sp.suggest(trial, setup.space)
    cfg_dict = sp.apply(setup.base, setup.family, values)
    run_dir = setup.runs / f"trial-{trial.number}"
    # trial numbers are never reused within a study, and --out belongs to one study (study.json), so
    # a folder of this number is a leftover of a study deleted and made again under the same name:
    # the compression steps refuse to overwrite theirs
    for old in (run_dir, *(run_dir.parent / f"{run_dir.name}-{s}" for s in STEPS)):
        if old.exists():
            shutil.rmtree(old)
    # no loss.png per trial (matplotlib, ~0.25 s): the study draws its winners' when it ends
    cfg_dict.update(run_dir=str(run_dir), progress=setup.progress, resume=False, loss_plot=False)
    cfg = config.validate(cfg_dict)
    alone = cfg.dist.workers == 1  # else the reporter runs in the trial's rank-0 worker process
    reporter = Reporter(setup, trial._trial_id, cfg.epochs, trial if alone else None)
    summary = train(cfg, on_epoch=reporter)
    pruned_at = reporter.pruned_at if alone else int(_attrs(trial).get("pruned_at", 0))
    trial.set_user_attr("epochs", int(summary["epochs"]))
    trial.set_user_attr("val_loss", float(summary["metrics"]["loss"]))
    for k, v in summary["metrics"].items():
        trial.set_user_attr(f"val_{k}", float(v))
    if pruned_at and pruned_at < cfg.epochs:  # pruned at the last epoch: it finished anyway
        raise optuna.TrialPruned(f"pruned after {pruned_at} epochs")
    artifact = compress(Path(summary["run_dir"]), values, setup.family)
    trial.set_user_attr("model_dir", str(artifact))
    measured = measure(artifact, setup.objectives, summary["metrics"])
    for k, v in measured.items():
        trial.set_user_attr(k, v)
    out = tuple(float(measured[o]) for o in setup.objectives)
    return out[0] if len(out) == 1 else out


def _attrs(trial: optuna.Trial) -> dict[str, Any]:
    """The trial's user attributes as stored now (its worker processes may have set some)."""
    return dict(trial.study._storage.get_trial(trial._trial_id).user_attrs)


def _primary(objective: str, metrics: dict[str, float]) -> float:
    if objective == "loss":
        return float(metrics["loss"])
    for name in ("bits_per_byte", "accuracy", "r2"):
        if name in metrics:
            return float(metrics[name])
    raise BigModelError(f"validation gave no primary metric (got {', '.join(metrics)})")


def compress(model_dir: Path, values: dict[str, Any], family: str) -> Path:
    """The artifact the trial chose: the trained model, distilled into a student, structurally pruned
    and/or int8, in that order (each step starts from the previous one's model directory)."""
    from bigmodel.compress import distill, prune, quantize

    current = model_dir
    if values.get("student_width"):
        out = model_dir.parent / f"{model_dir.name}-distilled"
        r = distill(current, hidden=[int(values["student_width"])], out=out, runs=10, progress=False)
        current = Path(r["model_dir"])
    if values.get("sparsity"):
        out = model_dir.parent / f"{model_dir.name}-pruned"
        r = prune(
            current,
            sparsity=float(values["sparsity"]),
            structured=True,
            finetune_epochs=1,
            steps=1,
            out=out,
            runs=10,
            progress=False,
        )
        current = Path(r["model_dir"])
    if values.get("int8"):
        out = model_dir.parent / f"{model_dir.name}-int8"
        method = "dynamic"
        r = quantize(current, method=method, out=out, runs=10)
        current = Path(r["model_dir"])
    return current


def measure(artifact: Path, objectives: tuple[str, ...], trained: dict[str, float]) -> dict[str, float]:
    """The artifact's metric, batch-1 latency and bytes on disk (only what the objectives need,
    plus the metric, which every table shows)."""
    from bigmodel.compress.measure import profile_all

    out: dict[str, float] = {"loss": float(trained["loss"])}
    compressed = artifact.name.endswith(tuple(f"-{s}" for s in STEPS))
    if "latency" in objectives or "size" in objectives or compressed:
        # trials are measured one after another, minutes apart: the fastest of 7 rounds spread over
        # ~half a second, not one burst of 50 calls that a busy neighbour can double (tiny models)
        p = profile_all([artifact], runs=50, batches=(1,), rounds=7)[0]
        # a language model is timed in tokens/s: its latency is the ms per generated token at batch 1
        latency = p["latency_ms_b1"] if "latency_ms_b1" in p else 1000.0 / p["tokens_per_s_b1"]
        out.update(metric=float(p["metric"]), latency=float(latency), size=float(p["file_bytes"]))
    else:
        out["metric"] = _primary("metric", trained)
    return out
