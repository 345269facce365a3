"""``bigmodel tune``: does early stopping pay, do two workers go twice as fast, and does the Pareto
front hold a much faster model at nearly the best accuracy?

1. ASHA vs random search: the same trials (a seeded random sampler draws the same configurations in
   the same order), once trained in full and once under Optuna's successive-halving pruner (rungs at
   1, 3 and 9 epochs). Best validation loss reached and the sum of epochs spent, on the 200,000-row
   synthetic multiclass data and on digits, 3 seeds each; a plot of best-so-far vs epochs spent.
2. Two `bigmodel tune` processes on one study (journal file) vs one: finished trials per hour, one
   torch thread per process, on digits.
3. The Pareto front (accuracy, batch-1 latency) on digits, the default MLP space with widths up to
   2,048, int8 and distillation into a small student searched too: the fastest model within 1
   accuracy point of the most accurate one, and how much faster it is; four seeds.

BENCH_QUICK=1: fewer rows, trials and seeds (a smoke run, not the figures).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
QUICK = bool(os.environ.get("BENCH_QUICK"))
ROWS = 20_000 if QUICK else 200_000
SEEDS = (0,) if QUICK else (0, 1, 2)
# ASHA's rungs fill as trials come: its first trials are promoted with little competition, so a
# short study spends a larger share of the epochs (12 to 48 trials: 0.23-0.39 of a full search;
# Optuna's pruner on simulated learning curves: over 1/3 in 18% of 48-trial studies, ~1% at 64-96)
TRIALS = 6 if QUICK else 64
DIGITS_TRIALS = 6 if QUICK else 96
PARETO_TRIALS = 6 if QUICK else 64
# whether a study's most accurate trial is a slow model is chance on digits (small models reach the
# top accuracy too): four seeds say how often, two at a time, one per core
PARETO_SEEDS = (0,) if QUICK else (0, 1, 2, 3)
EPOCHS = 9  # the last rung of ASHA with reduction factor 3
SPACE = {
    "depth": {"low": 1, "high": 3},
    "width": {"low": 16, "high": 256, "log": True},
    "lr": {"low": 1e-4, "high": 1e-1, "log": True},
    "batch_size": {"choices": [128, 256, 512]},
    "dropout": {"low": 0.0, "high": 0.3},
}


def _synthetic(work: Path, rows: int) -> Path:
    from bigmodel.data import generate_synthetic

    synth = work / f"synthetic-{rows}"
    if not synth.exists():
        generate_synthetic(synth, rows=rows, features=32, task="multiclass", classes=10, seed=0, noise=0.5)
    return synth


def datasets(work: Path) -> dict[str, str]:
    return {f"synthetic {ROWS:,} x 32, 10 classes": str(_synthetic(work, ROWS)), "digits": "digits"}


def search(dataset: str, seed: int, pruner: str, storage: Path, trials: int) -> list[dict[str, Any]]:
    from bigmodel.tuning import tune

    base = {"data": {"dataset": dataset}, "epochs": EPOCHS, "dist": {"threads": 1}, "progress": False}
    out = tune(
        base,
        trials=trials,
        raw_space=SPACE,
        study_name=f"{Path(dataset).name}-{seed}-{pruner}",
        storage=str(storage),
        objectives=("loss",),
        pruner=pruner,  # type: ignore[arg-type]
        sampler="random",
        seed=seed,
        out=storage.parent / "runs" / storage.stem,  # searches run side by side: a folder each
        progress=False,
    )
    return sorted(out["trials"], key=lambda t: t["number"])


def curve(trials: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """Best validation loss so far (over trials that finished all epochs) against epochs spent."""
    spent, best, xs, ys = 0, float("inf"), [], []
    for t in trials:
        spent += int(t["epochs"] or 0)
        if t["state"] == "COMPLETE":
            best = min(best, float(t["val_loss"]))
        xs.append(spent)
        ys.append(best)
    return xs, ys


def _search_timed(
    dataset: str, seed: int, pruner: str, storage: Path, trials: int
) -> tuple[list[dict[str, Any]], float]:
    """``search`` in a worker process (one torch thread, as the parent set): its trials and seconds."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    return search(dataset, seed, pruner, storage, trials), time.perf_counter() - t0


def asha_vs_random(work: Path) -> tuple[list[list[Any]], list[str]]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    sets = datasets(work)
    (work / "studies").mkdir(parents=True, exist_ok=True)
    jobs = {}
    for dataset in sets.values():
        n = DIGITS_TRIALS if dataset == "digits" else TRIALS
        for seed in SEEDS:
            for pruner in ("none", "asha"):
                storage = work / "studies" / f"{Path(dataset).name}-{seed}-{pruner}.journal"
                storage.unlink(missing_ok=True)
                jobs[dataset, seed, pruner] = (dataset, seed, pruner, storage, n)
    # Two searches at a time, one per core (each one torch thread, as in a one-core run), the full
    # searches of the big data first so that the two processes finish together: ~half the wall time
    results: dict[tuple[str, int, str], tuple[list[dict[str, Any]], float]] = {}
    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
        order = sorted(jobs, key=lambda k: (k[0] == "digits", k[2] == "asha"))
        futures = {k: pool.submit(_search_timed, *jobs[k]) for k in order}
        for k, f in futures.items():
            results[k] = f.result()
    rows = []
    for label, dataset in sets.items():
        for seed in SEEDS:
            (full, s_full), (asha, s_asha) = results[dataset, seed, "none"], results[dataset, seed, "asha"]
            (fx, fy), (ax_, ay) = curve(full), curve(asha)
            rows.append(
                [
                    label,
                    seed,
                    len(full),
                    f"{fy[-1]:.4f}",
                    f"{ay[-1]:.4f}",
                    f"{100 * (ay[-1] - fy[-1]) / fy[-1]:+.2f}%",
                    fx[-1],
                    ax_[-1],
                    f"{ax_[-1] / fx[-1]:.2f}",
                    f"{s_full:.0f} / {s_asha:.0f}",
                ]
            )
    # a quick (smoke) run keeps its plot beside its work, away from the published figures
    plot = work / "tune_asha.png" if QUICK else HERE / "results" / "tune_asha.png"
    plot_curves({k: v[0] for k, v in results.items()}, sets, plot)
    notes = [f"Plot: {plot.relative_to(HERE.parent)} (best-so-far against epochs spent, each seed a line)."]
    return rows, notes


def plot_curves(
    results: dict[tuple[str, int, str], list[dict[str, Any]]], sets: dict[str, str], plot: Path
) -> None:
    """Best-so-far validation loss against epochs spent, full search and ASHA, a panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(11, 4))
    for ax, (label, dataset) in zip(axes, sets.items(), strict=True):
        for seed in SEEDS:
            first = seed == SEEDS[0]
            for pruner, color, name in (
                ("none", "tab:blue", "random, full"),
                ("asha", "tab:red", "random + ASHA"),
            ):
                xs, ys = curve(results[dataset, seed, pruner])
                ax.step(xs, ys, where="post", c=color, alpha=0.7, label=name if first else None)
        ax.set_title(label)
        ax.set_yscale("log")  # the first trials' losses are many times the best ones'
        ax.set_xlabel("epochs spent (sum over trials)")
        ax.set_ylabel("best validation loss so far")
        ax.legend()
    fig.tight_layout()
    plot.parent.mkdir(exist_ok=True)
    fig.savefig(plot, dpi=110)
    plt.close(fig)


def tune_cli(args: list[str], storage: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    cmd = [str(Path(sys.executable).parent / "bigmodel"), "tune", *args, "--storage", str(storage), "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def workers(work: Path) -> tuple[list[list[Any]], list[str]]:
    cfg = work / "one-thread.yaml"
    # one thread per process, no loader threads: two processes on two cores, nothing else competing
    # Every trial the same work (one architecture and batch size; only lr and dropout searched), so
    # the two runs compare the machinery, not which configurations each worker's sampler drew.
    cfg.write_text(
        "dist: {threads: 1}\ndata: {prefetch: 0}\nprogress: false\nmodel: {hidden: [128, 128]}\n"
        "batch_size: 256\nspace:\n  lr: {low: 1.0e-4, high: 1.0e-1, log: true}\n"
        "  dropout: {low: 0.0, high: 0.3}\n"
    )
    # 96 trials of ~2 s (20,000 synthetic rows, 12 epochs): one worker runs ~3 minutes, so that a
    # process's start-up and first trial (~5 s) weigh little on the rate, as in a study of hours
    trials = 6 if QUICK else 96
    dataset = datasets(work)[next(iter(datasets(work)))] if QUICK else str(_synthetic(work, 20_000))
    args = [str(cfg), "--dataset", dataset, "--epochs", "12", "--pruner", "none", "--sampler", "random"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows: list[list[Any]] = []
    done_n: dict[int, int] = {1: 0, 2: 0}
    seconds_n: dict[int, float] = {1: 0.0, 2: 0.0}
    steady: dict[int, list[float]] = {1: [], 2: []}
    # In the order 1, 2, 2, 1 workers: on a shared host one process alone ran 12% faster in one
    # hour than in another (1,558/h at 21:12, 1,755/h at 22:45), so runs of one, then two, then one
    # again cancel the host's drift out of the ratio
    for k, n in enumerate((1, 2, 2, 1)):
        study = f"w{n}-{k}"
        storage = work / "studies" / f"workers-{study}.journal"
        storage.unlink(missing_ok=True)
        t0 = time.perf_counter()
        procs = [
            tune_cli([*args, "--study", study, "--trials", str(trials), "--seed", str(i)], storage, env)
            for i in range(n)
        ]
        outs = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(err[-1500:])
            outs.append(json.loads(out.strip().splitlines()[-1]))
        seconds = time.perf_counter() - t0
        last = max(outs, key=lambda o: len(o["trials"]))
        done = [t for t in last["trials"] if t["state"] == "COMPLETE"]
        per_hour = len(done) / seconds * 3600
        best = max(t["metric"] for t in done)
        done_n[n] += len(done)
        seconds_n[n] += seconds
        steady[n].append(_steady_rate(storage, study))
        rows.append(
            [n, len(done), f"{seconds:.0f}", f"{per_hour:,.0f}", f"{best:.4f}", f"{steady[n][-1]:,.0f}"]
        )
    rate = {n: done_n[n] / seconds_n[n] * 3600 for n in (1, 2)}
    steady_mean = {n: sum(v) / len(v) for n, v in steady.items()}
    notes = [
        f"Two workers vs one: {rate[2] / rate[1]:.2f}x finished trials per hour, start to end, over "
        f"the runs in the order 1, 2, 2, 1 workers (target >= 1.8x); "
        f"{steady_mean[2] / steady_mean[1]:.2f}x once every worker has finished its first "
        f"trial (a process's start-up and first trial, ~5 s, weigh on a run of minutes; not on a "
        f"study of hours). {trials} trials a run; every trial does the same work (one architecture; "
        "lr and dropout searched)."
    ]
    return rows, notes


def _steady_rate(storage: Path, study: str) -> float:
    """Trials finished per hour from the moment every worker process had finished its first trial
    (their start-up and warm-up behind them) to the last one finished."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    s = optuna.load_study(
        study_name=study, storage=optuna.storages.JournalStorage(JournalFileBackend(str(storage)))
    )
    done = [t for t in s.trials if t.state == optuna.trial.TrialState.COMPLETE and t.datetime_complete]
    first: dict[Any, Any] = {}
    for t in sorted(done, key=lambda t: t.datetime_complete):
        first.setdefault(t.user_attrs.get("pid"), t.datetime_complete)
    start = max(first.values())
    end = max(t.datetime_complete for t in done)
    later = sum(1 for t in done if t.datetime_complete > start)
    return later / max((end - start).total_seconds(), 1e-9) * 3600


def pareto(
    work: Path, seed: int = 0, sampler: str = "random"
) -> tuple[list[list[Any]], list[str], dict[str, float]]:
    import optuna

    from bigmodel.tuning import tune
    from bigmodel.tuning.space import DEFAULT_COMPRESSION, DEFAULTS

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = work / "studies" / f"pareto-{seed}.journal"
    storage.parent.mkdir(parents=True, exist_ok=True)
    storage.unlink(missing_ok=True)
    # The product's default MLP space (batch sizes from 32: digits has 1,422 training rows) with
    # widths up to 2,048, so that compute, not per-call overhead, sets a big model's latency, and
    # every compression knob: int8, and distilling the trained model into a small student.
    space = {
        **DEFAULTS["mlp"],
        "width": {"low": 16, "high": 2048, "log": True},
        **DEFAULT_COMPRESSION["mlp"],
        "student_width": {"choices": [0, 32, 64]},
    }
    out = tune(
        # 40 epochs with a cosine schedule: wide models were still learning at 10 (3 to 11 steps an
        # epoch at the batch sizes of an earlier space) and gain most from the annealed end
        {
            "data": {"dataset": "digits"},
            "epochs": 40 if not QUICK else 4,
            "optim": {"schedule": "cosine"},
            "progress": False,
        },
        trials=PARETO_TRIALS,
        raw_space=space,
        study_name=f"pareto-{seed}",
        sampler=sampler,
        storage=str(storage),
        objectives=("metric", "latency"),
        seed=seed,
        out=work / f"runs-pareto-{seed}",
        progress=False,
    )
    if not QUICK:  # beside the other figures, where BENCHMARKS.md points
        out["plot"] = shutil.copyfile(out["plot"], HERE / "results" / f"tune_pareto_seed{seed}.png")
    return front(out, work)


def front(out: dict[str, Any], work: Path) -> tuple[list[list[Any]], list[str], dict[str, float]]:
    """Rows, notes and ratios of one Pareto study (``tune``'s or ``tune show``'s result): ``ratio``,
    the most accurate model's latency over the fastest within 1 point; ``top_over_floor``, over the
    fastest model of all (below 3, no model of the study can be 3x faster than the most accurate)."""
    done = [t for t in out["trials"] if t["state"] == "COMPLETE"]
    # the most accurate model on the front: of the trials tied at the best accuracy, the fastest
    top = max(done, key=lambda t: (t["metric"], -t["latency"]))
    near = [t for t in done if t["metric"] >= top["metric"] - 0.01]
    fast = min(near, key=lambda t: t["latency"])
    floor = min(done, key=lambda t: t["latency"])
    rows = [
        [name, t["number"], f"{t['metric']:.4f}", f"{t['latency']:.4f}", f"{t['size']:,.0f}", _p(t)]
        for name, t in (("most accurate", top), ("fastest within 1 point", fast), ("fastest of all", floor))
    ]
    ratio = top["latency"] / fast["latency"]
    notes = [
        f"Pareto front on digits: {len(out['pareto'])} of {len(done)} trials; the fastest within 1 accuracy "
        f"point of the most accurate is {ratio:.2f}x faster at batch 1 (target >= 3x). Plot: {out.get('plot')}."
    ]
    # distillation and int8 can tie a small model with a big one at the top accuracy
    tied = [t for t in done if t["metric"] == top["metric"]]
    slowest = max(tied, key=lambda t: t["latency"])
    if len(tied) > 1:
        notes.append(
            f"{len(tied)} trials share the top accuracy {top['metric']:.4f}: from {top['latency']:.4f} ms "
            f"(trial {top['number']}) to {slowest['latency']:.4f} ms (trial {slowest['number']}, {_p(slowest)}), "
            f"{slowest['latency'] / fast['latency']:.2f}x the fastest within 1 point."
        )
    notes.append(_exported(slowest, fast, work))
    if top["latency"] < 3 * floor["latency"]:
        notes.append(
            f"No model in this study is 3x faster than the most accurate one: it runs in "
            f"{top['latency']:.4f} ms, {top['latency'] / floor['latency']:.2f}x the fastest model of all "
            f"({floor['latency']:.4f} ms, accuracy {floor['metric']:.4f})."
        )
    return rows, notes, {"ratio": ratio, "top_over_floor": top["latency"] / floor["latency"]}


def pareto_verdict(ratios: dict[int, dict[str, float]]) -> str:
    """One line over the seeds: where the target holds, and why not where it does not."""
    met = [s for s, r in ratios.items() if r["ratio"] >= 3]
    cannot = [s for s, r in ratios.items() if s not in met and r["top_over_floor"] < 3]
    lost = [s for s in ratios if s not in met and s not in cannot]
    line = (
        f"Pareto verdict: a model >= 3x faster than the most accurate, within 1 point, in {len(met)} of "
        f"{len(ratios)} seeds (" + ", ".join(f"seed {s} {r['ratio']:.2f}x" for s, r in ratios.items()) + ")"
    )
    if cannot:
        worst = max(ratios[s]["top_over_floor"] for s in cannot)
        line += (
            f"; in {_seeds(cannot)} the most accurate model itself runs within "
            f"{worst:.2f}x of the study's fastest model, so no model there is 3x faster than it"
        )
    if lost:
        line += f"; in {_seeds(lost)} the models 3x faster are more than 1 point behind"
    return line + "."


def _seeds(seeds: list[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + " and ".join(map(str, seeds))


def _exported(model: dict[str, Any], fast: dict[str, Any], work: Path) -> str:
    """A model at the top accuracy (the slowest of a tie) timed three ways in one interleaved run: as
    the study served it, the same model exported to ONNX (ONNX Runtime, fp32), and the fastest model
    within 1 point. A float model's latency in a trial is PyTorch's: this says how much of the gap
    is PyTorch's per-call cost, which ``bigmodel export`` removes, and how much size and int8."""
    from bigmodel.compress.export import export_onnx
    from bigmodel.compress.measure import open_runner, profile_all

    src = Path(model["model_dir"])
    if model["number"] == fast["number"]:
        return "The top-accuracy model is also the fastest within 1 point."
    if open_runner(src).runtime == "onnxruntime":
        return f"The slowest top-accuracy model (trial {model['number']}) already runs in ONNX Runtime (int8 or exported)."
    copy = work / f"{src.name}-exported"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(src, copy)
    export_onnx(copy)
    served, exported, quick = profile_all(
        [src, copy, Path(fast["model_dir"])], runs=50, batches=(1,), rounds=7
    )
    a, b, c = (p["latency_ms_b1"] for p in (served, exported, quick))
    return (
        f"Side by side, one interleaved run: trial {model['number']} as served in the study "
        f"({served['runtime']}) {a:.4f} ms, the same model exported to ONNX (ONNX Runtime fp32) {b:.4f} ms, "
        f"the fastest within 1 point ({quick['runtime']}) {c:.4f} ms: {a / c:.2f}x as served, "
        f"{b / c:.2f}x against the exported model."
    )


def pareto_seeds(work: Path) -> list[str]:
    """The Pareto study in each seed, two at a time (one per core, one torch thread each, as the
    ASHA searches run), as BENCHMARKS.md notes and a verdict over the seeds."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
        results = {seed: pool.submit(pareto, work, seed) for seed in PARETO_SEEDS}
        done = {seed: f.result() for seed, f in results.items()}
    lines = [line for seed, (rows, notes, _) in done.items() for line in _pareto_lines(seed, rows, notes)]
    return [*lines, pareto_verdict({seed: r[2] for seed, r in done.items()})]


def _p(t: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())


def _pareto_lines(seed: int, rows: list[list[Any]], notes: list[str]) -> list[str]:
    """One Pareto study's rows and notes as BENCHMARKS.md notes, each naming its seed."""
    return [
        *(
            f"Pareto, seed {seed}: {r[0]}: trial {r[1]}, accuracy {r[2]}, {r[3]} ms, {r[4]} bytes ({r[5]})"
            for r in rows
        ),
        *(f"Pareto, seed {seed}: {n}" for n in notes),
    ]


def run() -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = HERE / ".work" / ("tune-quick" if QUICK else "tune")  # a quick run never touches a full one's
    work.mkdir(parents=True, exist_ok=True)
    os.environ["BIGMODEL_HOME"] = str(work / "home")
    os.environ["OMP_NUM_THREADS"] = "1"
    a_rows, a_notes = asha_vs_random(work)
    w_rows, w_notes = workers(work)
    p_notes = pareto_seeds(work)
    rows = [*a_rows]
    notes = [
        "ASHA vs random: random sampler (same seed: the same configurations), 9 epochs at most, "
        "Optuna's SuccessiveHalvingPruner (min 1 epoch, reduction factor 3); one torch thread; "
        f"{TRIALS} trials on the synthetic data, {DIGITS_TRIALS} on digits; two searches at a time, one per core. "
        "Columns: best validation loss (random full / with ASHA), gap, epochs spent, ASHA's share, seconds.",
        *a_notes,
        "Two workers, runs in the order made: "
        + "; ".join(
            f"{r[0]} worker(s): {r[1]} trials in {r[2]} s = {r[3]}/h ({r[5]}/h after warm-up), best accuracy {r[4]}"
            for r in w_rows
        ),
        *w_notes,
        *p_notes,
    ]
    return {
        "title": "Tuning: ASHA vs random search, workers, Pareto front (bigmodel tune)",
        "header": [
            "dataset",
            "seed",
            "trials",
            "best loss, random",
            "best loss, ASHA",
            "gap",
            "epochs, random",
            "epochs, ASHA",
            "ASHA / random epochs",
            "seconds random / ASHA",
        ],
        "rows": rows,
        "notes": notes,
    }
