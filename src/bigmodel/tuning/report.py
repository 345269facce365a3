"""What a study found: one row per trial, the best trial (one objective) or the Pareto front (several),
a plot of the front, and a progress bar while trials run."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna

UNITS = {"latency": "ms", "size": "bytes"}


@contextlib.contextmanager
def trial_progress(total: int, done: int, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yield ``update(finished)``: a bar of finished trials out of ``total`` (all workers')."""
    from bigmodel.console import progress_bar

    shown = min(done, total)
    with progress_bar("trials", total=total, enabled=enabled) as advance:
        advance(shown)

        def update(finished: int) -> None:
            nonlocal shown
            finished = min(finished, total)
            if finished > shown:
                advance(finished - shown)
                shown = finished

        yield update


def row(t: optuna.trial.FrozenTrial, objectives: tuple[str, ...]) -> dict[str, Any]:
    values = list(t.values) if t.values is not None else [None] * len(objectives)
    out: dict[str, Any] = {
        "number": t.number,
        "state": t.state.name,
        "params": dict(t.params),
        "epochs": t.user_attrs.get("epochs"),
        **{o: v for o, v in zip(objectives, values, strict=True)},
        "metric": t.user_attrs.get("metric"),
        "val_loss": t.user_attrs.get("val_loss"),
        "latency": t.user_attrs.get("latency"),
        "size": t.user_attrs.get("size"),
        "model_dir": t.user_attrs.get("model_dir"),
    }
    retry_of = _retry_of(t)
    if retry_of is not None:
        out["retry_of"] = retry_of
    return out


def _retry_of(t: optuna.trial.FrozenTrial) -> int | None:
    """The trial this one runs again, after its worker died: journal storage (ours) or RDB
    heartbeats (Optuna's RetryFailedTrialCallback)."""
    n = t.user_attrs.get("retry_of", t.system_attrs.get("failed_trial"))
    return n if isinstance(n, int) else None


def summary(study: optuna.Study, objectives: tuple[str, ...], out: Path) -> dict[str, Any]:
    """``{"study", "objectives", "directions", "counts", "epochs_spent", "retried_trials", "trials",
    "best" | "pareto", "plot"}``."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    result: dict[str, Any] = {
        "study": study.study_name,
        "objectives": list(objectives),
        "directions": [d.name.lower() for d in study.directions],
        "counts": counts,
        "epochs_spent": sum(int(t.user_attrs.get("epochs") or 0) for t in trials),
        # trials whose worker died mid-trial and that were queued again
        "retried_trials": sorted({n for t in trials if (n := _retry_of(t)) is not None}),
        "trials": [row(t, objectives) for t in trials],
    }
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return result
    if len(objectives) == 1:
        result["best"] = row(study.best_trial, objectives)
    else:
        front = sorted(study.best_trials, key=lambda t: t.number)
        result["pareto"] = [row(t, objectives) for t in front]
        result["plot"] = str(pareto_plot(complete, front, objectives, out / "pareto.png"))
    return result


def winners_loss_plots(summary: dict[str, Any], runs: Path) -> None:
    """loss.png in the training folder of the best trial or of each trial on the front, as ``train``
    draws it (trials train without it). A winner trained on another machine has no folder here."""
    import json

    from bigmodel.training.plots import loss_plot
    from bigmodel.training.run_dir import LOSS_PLOT, METRICS_FILE

    winners = [summary["best"]] if "best" in summary else summary.get("pareto", [])
    for w in winners:
        folder = runs / f"trial-{w['number']}"
        if not (folder / METRICS_FILE).is_file() or (folder / LOSS_PLOT).exists():
            continue
        with open(folder / METRICS_FILE) as f:
            records = [json.loads(line) for line in f if line.strip()]
        if records:
            params = " ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in w["params"].items()
            )
            loss_plot(records, folder / LOSS_PLOT, title=f"{summary['study']} trial {w['number']}: {params}")


def pareto_plot(
    trials: list[optuna.trial.FrozenTrial],
    front: list[optuna.trial.FrozenTrial],
    objectives: tuple[str, ...],
    path: Path,
) -> Path:
    """The first objective against each other one (a panel each), every trial grey, the front in
    colour. Two objectives: the front is joined, a staircase. Three: a trial on the front may be
    beaten on one panel and win on the other's axis, so its points stand alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bigmodel.fsutil import atomic_path

    y_name, others = objectives[0], objectives[1:]
    fig, axes = plt.subplots(1, len(others), figsize=(6.4 * len(others), 4.4), squeeze=False)
    ys = [t.values[0] for t in trials]
    for i, (ax, x_name) in enumerate(zip(axes[0], others, strict=True), start=1):
        xs = [t.values[i] for t in trials]
        ax.scatter(xs, ys, c="0.7", s=18, label="trials")
        pts = sorted((t.values[i], t.values[0], t.number) for t in front)
        style = "o-" if len(others) == 1 else "o"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, c="tab:red", label="Pareto front")
        for x, y, n in pts:
            ax.annotate(f"#{n}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if x_name in ("latency", "size") and max(xs) / max(min(xs), 1e-12) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(f"{x_name} ({UNITS.get(x_name, '')})".replace(" ()", ""))
        ax.set_ylabel(y_name)
        ax.legend()
    fig.suptitle("bigmodel tune: trade-off of the trials")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def tables(result: dict[str, Any]) -> list[Any]:
    """Rich tables for people: the trials, then the best trial or the front."""
    from bigmodel.console import grid_table

    objectives = result["objectives"]
    header = ["#", "state", "epochs", *objectives, "params"]
    if "metric" not in objectives:
        header.insert(3, "metric")

    def cells(r: dict[str, Any]) -> list[Any]:
        vals = [_fmt(r.get(o)) for o in objectives]
        base = [r["number"], r["state"].lower(), r["epochs"] or ""]
        extra = [] if "metric" in objectives else [_fmt(r.get("metric"))]
        return [*base, *extra, *vals, _params(r["params"])]

    out = [
        grid_table(
            f"study {result['study']}: {_counts(result['counts'])}",
            header,
            [cells(r) for r in result["trials"]],
        )
    ]
    if "best" in result:
        out.append(grid_table("best trial", header, [cells(result["best"])]))
    if "pareto" in result:
        out.append(
            grid_table(f"Pareto front (plot: {result['plot']})", header, [cells(r) for r in result["pareto"]])
        )
    if result.get("registered"):
        rows = [
            [
                f"#{r['trial']}",
                f"{r['version']}",
                "registered" if r.get("new", True) else "already registered",
            ]
            for r in result["registered"]
        ]
        out.append(grid_table("registry", ["trial", "version", ""], rows))
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def _params(p: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in p.items())


def _counts(c: dict[str, int]) -> str:
    return ", ".join(f"{n} {k.lower()}" for k, n in sorted(c.items()))
