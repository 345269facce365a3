"""``bigmodel tune``: open (or continue) a study, run trials until it holds ``trials`` finished ones,
summarise it, and optionally register the winners. Reads top to bottom."""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import psutil

from bigmodel.errors import BigModelError
from bigmodel.tuning import report
from bigmodel.tuning import space as sp
from bigmodel.tuning import study as st
from bigmodel.tuning.objective import OBJECTIVES, Setup, direction, run_trial

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
WAIT_S = 1.0  # how often a worker with nothing left to start looks at the others' running trials
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def tune(
    base: dict[str, Any],
    *,
    trials: int,
    raw_space: Any = None,
    study_name: str | None = None,
    storage: str | None = None,
    objectives: tuple[str, ...] = ("metric",),
    pruner: st.Pruner | None = None,
    sampler: st.Sampler = "tpe",
    timeout_s: float | None = None,
    seed: int | None = None,
    register: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run a study (see the module docstring); return its summary (``report.summary``)."""
    # 1. check everything before the study is touched
    if trials < 1:
        raise BigModelError(f"--trials must be at least 1, got {trials}")
    if timeout_s is not None and not timeout_s > 0:  # NaN too
        raise BigModelError(f"--timeout must be positive seconds, got {timeout_s}")
    bad = [o for o in objectives if o not in OBJECTIVES]
    if (
        bad
        or not objectives
        or len(set(objectives)) != len(objectives)
        or objectives[0] not in ("metric", "loss")
    ):
        raise BigModelError(
            f"--objective must start with metric or loss, then latency and/or size, once each "
            f"(got {','.join(objectives)})"
        )
    if seed is not None and not 0 <= seed < 2**32:
        raise BigModelError(f"--seed must be in [0, 2**32), got {seed}")
    if study_name is not None and not STUDY_NAME.fullmatch(study_name):
        raise BigModelError(
            f"bad study name {study_name!r}: use letters, digits, '_', '.', '-' (starting with a letter or "
            "digit, at most 100): it names a folder"
        )
    if register:
        from bigmodel.registry.refs import check_name

        check_name(register)
    from bigmodel import config

    cfg = config.validate(base)  # the fixed part of the config first: its errors name its own keys
    family: sp.Family = base.get("model", {}).get("name", "mlp")
    if family not in sp.KNOBS:
        raise BigModelError(f"model.name must be mlp or transformer to tune, got {family!r}")
    multi = len(objectives) > 1
    compress_by_default = multi and objectives[0] != "loss"  # a loss is measured on the trained model only
    space = (
        sp.parse(family, raw_space)
        if raw_space is not None
        else sp.default(family, compression=compress_by_default)
    )
    if objectives[0] == "loss" and any(k in space for k in sp.COMPRESSION):
        raise BigModelError(
            "--objective loss measures the trained model; drop int8/sparsity/student_width from the space "
            "or use metric"
        )
    if multi and pruner not in (None, "none"):
        raise BigModelError(
            f"--pruner {pruner}: Optuna prunes single-objective studies only; use --pruner none with "
            f"--objective {','.join(objectives)}"
        )
    pruner = pruner or ("none" if multi else "asha")
    _check_configs(base, family, space)
    dataset = cfg.data.dataset
    from bigmodel.data.builtin import resolve

    # a missing or damaged dataset (its shards' footers against its manifest), or one the family
    # cannot learn (an MLP on text): one line, no study
    folder, manifest = resolve(dataset, seed=cfg.seed, val_fraction=cfg.data.val_fraction)
    from bigmodel.data.stream import list_row_groups
    from bigmodel.training.spec import architecture

    for split in manifest.splits:
        list_row_groups(folder, manifest, split)
    architecture(cfg, manifest)
    name = study_name or f"{Path(dataset).name}-{family}"
    storage_obj = st.open_storage(storage)
    identity = st.Identity(
        dataset=dataset,
        family=family,
        objectives=objectives,
        directions=tuple(direction(o, family) for o in objectives),
        space=sp.to_json(space),
    )
    from bigmodel.data.builtin import home

    runs = Path(out) if out else home() / "tune" / name
    st.check_runs(runs, name, storage_obj)
    with _quiet_optuna():
        study = st.open_study(
            name, storage_obj, identity, st.make_sampler(sampler, seed), st.make_pruner(pruner, cfg.epochs)
        )

    # 2. run trials until the study holds `trials` finished ones (this worker's share of them)
    runs.mkdir(parents=True, exist_ok=True)
    st.claim_runs(runs, study, storage)
    if _finished(study) >= trials:
        sys.stderr.write(
            f"study {name!r} already holds {_finished(study)} finished trials (--trials {trials}): none run; "
            "a larger --trials continues it\n"
        )
    setup = Setup(
        family,
        base,
        space,
        objectives,
        runs,
        pruning=pruner != "none",
        progress=False,
        storage=storage,
        study=name,
        pruner=pruner,
    )
    st.fail_dead_workers(study)
    started = time.monotonic()
    with report.trial_progress(trials, _finished(study), enabled=progress) as advance:

        def stop_when_done(s: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
            if t.state == optuna.trial.TrialState.FAIL:
                sys.stderr.write(f"trial {t.number} failed: {_reason(t)}\n")
            st.fail_dead_workers(s)
            advance(_finished(s))
            if _finished(s) >= trials:
                s.stop()

        jittered = False
        while _finished(study) < trials:
            left = None if timeout_s is None else timeout_s - (time.monotonic() - started)
            if left is not None and left <= 0:
                break
            slots = trials - _finished(study) - st.live_running(study)
            if slots <= 0:
                # other workers' running trials may finish the study: wait for them rather than
                # start one more (two workers at 11 of 12 would otherwise finish 13)
                time.sleep(WAIT_S)
                st.fail_dead_workers(study)
                advance(_finished(study))
                continue
            if slots <= 2 and not jittered:
                # the last slots: idle workers that looked at the same moment would all take them;
                # each waits a random moment and looks again, so the first to start is seen
                jittered = True
                time.sleep(random.uniform(0.0, 0.5))
                continue
            with _quiet_optuna():
                study.optimize(
                    lambda t: _objective(t, setup),
                    n_trials=1,  # then look again: another worker may have finished the study
                    timeout=left,
                    callbacks=[stop_when_done],
                    # a config the space allows but training refuses, or runs out of memory on: FAIL, go on
                    catch=(Exception,),
                    gc_after_trial=True,
                )
            jittered = False
            if not _running_or_waiting(study) and _failed_in_a_row(study) >= 3:
                raise BigModelError(f"study {name!r}: the last 3 trials failed ({_last_failure(study)})")

    # 3. summarise, plot, register
    summary = report.summary(study, objectives, runs)
    report.winners_loss_plots(summary, runs)
    if register:
        from bigmodel.tuning.register import register_winners

        summary["registered"] = register_winners(study, summary, register)
    return summary


def _objective(trial: optuna.Trial, setup: Setup) -> float | tuple[float, ...]:
    try:
        return run_trial(trial, setup)
    except optuna.TrialPruned:
        raise
    except Exception as err:  # the trial becomes FAIL; keep why, in one line, for the table and the log
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        trial.set_user_attr("error", f"{type(err).__name__}: {first}"[:300])
        raise


def show(study_name: str, storage: str | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """The summary of an existing study, without running anything."""
    study = st.load(study_name, st.open_storage(storage, create=False))
    objectives = tuple(study.user_attrs.get("objectives") or ("metric",))
    from bigmodel.data.builtin import home

    return report.summary(study, objectives, Path(out) if out else home() / "tune" / study_name)


def _check_size(base: dict[str, Any], family: sp.Family, space: dict[str, sp.Param]) -> None:
    """The space's largest MLP must fit this machine's memory to train (weights, gradients and Adam's
    two moments: 16 bytes a parameter): a width of 10**6 is refused now, not found by the OOM killer."""
    if family != "mlp":
        return

    def top(name: str) -> Any:
        p = space.get(name)
        return None if p is None else max(p.choices) if isinstance(p, sp.Choices) else p.high

    model = sp.apply(base, family, {k: v for k in ("depth", "width") if (v := top(k)) is not None}).get(
        "model"
    )
    widths = [int(w) for w in (model or {}).get("hidden") or []]
    if not widths:
        return
    # a lower bound: the hidden-to-hidden weights, and one input and one output per end
    params = sum(a * b for a, b in itertools.pairwise(widths)) + widths[0] + widths[-1]
    total = psutil.virtual_memory().total
    if 16 * params > total:
        raise BigModelError(
            f"the search space's largest MLP (hidden {widths[0]} x {len(widths)}) has {params:.2g} "
            f"weights, {16 * params / 2**30:,.0f} GiB to train, more than this machine's "
            f"{total / 2**30:,.0f} GiB: lower width or depth"
        )


def _check_configs(base: dict[str, Any], family: sp.Family, space: dict[str, sp.Param]) -> None:
    """Every choice and both ends of every range must make a valid training config, so a typo in the
    space is found now and not as a failed trial."""
    from bigmodel import config

    _check_size(base, family, space)
    for name, p in space.items():
        if name in sp.COMPRESSION:
            if (
                isinstance(p, sp.Choices)
                and name == "int8"
                and not all(isinstance(c, bool) for c in p.choices)
            ):
                raise BigModelError(f"the search space: int8 choices must be true/false, got {p.choices}")
            ends = p.choices if isinstance(p, sp.Choices) else [p.low, p.high]
            if name == "sparsity" and not all(
                isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1 for v in ends
            ):
                raise BigModelError(f"the search space: sparsity must lie in [0, 1), got {ends}")
            if name == "student_width" and not all(
                isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in ends
            ):
                raise BigModelError(
                    f"the search space: student_width must be whole numbers >= 0 (0: no student), got {ends}"
                )
            continue
        candidates = p.choices if isinstance(p, sp.Choices) else [p.low, p.high]
        for value in candidates:
            try:
                config.validate(sp.apply(base, family, {name: value}))
            except BigModelError as err:
                raise BigModelError(
                    f"the search space: {name}={value!r} is not a valid setting ({err})"
                ) from None


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _running_or_waiting(study: optuna.Study) -> bool:
    states = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    return bool(study.get_trials(deepcopy=False, states=states))


def _failed_in_a_row(study: optuna.Study) -> int:
    n = 0
    for t in reversed(study.get_trials(deepcopy=False)):
        if t.state != optuna.trial.TrialState.FAIL:
            break
        n += 1
    return n


def _last_failure(study: optuna.Study) -> str:
    for t in reversed(study.get_trials(deepcopy=False)):
        if t.state == optuna.trial.TrialState.FAIL:
            return _reason(t)
    return ""


def _reason(t: optuna.trial.FrozenTrial) -> str:
    """What a trial failed with, in one line (``_objective`` records it)."""
    return str(t.user_attrs.get("error") or "the worker stopped (killed, or interrupted)")


@contextlib.contextmanager
def _quiet_optuna() -> Any:
    """Optuna logs a line per trial and a traceback per failed one; our progress bar, one line per
    failure and the table say it once."""
    logger = logging.getLogger("optuna")
    level = logger.level
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        logger.setLevel(level)
