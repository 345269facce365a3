"""``bigmodel tune``: search architecture, training and compression; ``bigmodel tune show``."""

from __future__ import annotations

import argparse
from typing import Any

from bigmodel.cli.common import add_json, emit
from bigmodel.errors import BigModelError

# flag -> training config key
FLAGS = {"dataset": "data.dataset", "model": "model.name", "epochs": "epochs", "workers": "dist.workers"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tune",
        help="search architecture, training and compression with Optuna (ASHA, Pareto, many workers)",
        description="bigmodel tune [CONFIG.yaml] --dataset D --trials N ...; "
        "bigmodel tune show --study NAME [--storage URL]",
    )
    p.add_argument(
        "config",
        nargs="?",
        help="a training config YAML with a `space:` section (defaults per model family); "
        "or the word `show` to summarise a study",
    )
    p.add_argument("--dataset", help="built-in name or prepared folder (as for train)")
    p.add_argument("--model", help="mlp (default) | transformer")
    p.add_argument("--epochs", type=int, help="the most epochs a trial trains (default 10)")
    p.add_argument("--trials", type=int, help="finished trials the study should hold (all workers together)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--study", help="study name (default: DATASET-FAMILY); the same name continues it")
    p.add_argument(
        "--storage",
        help="a journal file (default ~/.bigmodel/tune/studies.journal: many processes, one machine) or "
        "postgresql://... (many machines; heartbeats retry a dead worker's trial)",
    )
    p.add_argument(
        "--objective",
        default="metric",
        help="metric | loss | metric,latency | metric,size | metric,latency,size (several: a Pareto front)",
    )
    p.add_argument("--pruner", choices=["asha", "hyperband", "none"], help="default asha (one objective)")
    p.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    p.add_argument(
        "--workers", type=int, help="DDP workers per trial (rank 0 reports each epoch to the pruner)"
    )
    p.add_argument("--seed", type=int, help="the sampler's seed")
    p.add_argument("--register", metavar="NAME", help="register the best model (or the Pareto set) as NAME")
    p.add_argument("--out", help="where the trials' model directories go (default ~/.bigmodel/tune/STUDY)")
    add_json(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> None:
    from bigmodel.tuning import report

    if args.config == "show":
        if not args.study:
            raise BigModelError("bigmodel tune show needs --study NAME")
        from bigmodel.tuning import show

        result = show(args.study, storage=args.storage, out=args.out)
        emit(args, result, lambda: report.tables(result))
        return
    from bigmodel import config
    from bigmodel.tuning import tune

    base: dict[str, Any] = config.load_yaml(args.config) if args.config else {}
    if "space" in base and not base["space"]:
        raise BigModelError(f"{args.config}: `space:` is empty (leave it out for the default space)")
    raw_space = base.pop("space", None)
    base.setdefault("epochs", 10)
    for flag, key in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            config.set_key(base, key, value)
    if args.trials is None:
        raise BigModelError("bigmodel tune needs --trials N")
    if not (base.get("data") or {}).get("dataset"):
        raise BigModelError("bigmodel tune needs --dataset (or data.dataset in the config)")
    result = tune(
        base,
        trials=args.trials,
        raw_space=raw_space,
        study_name=args.study,
        storage=args.storage,
        objectives=tuple(o.strip() for o in args.objective.split(",") if o.strip()),
        pruner=args.pruner,
        sampler=args.sampler,
        timeout_s=args.timeout,
        seed=args.seed,
        register=args.register,
        out=args.out,
        progress=not args.json,
    )
    emit(args, result, lambda: report.tables(result))
