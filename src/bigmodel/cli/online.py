"""``bigmodel online``."""

from __future__ import annotations

import argparse
from typing import Any

from bigmodel.cli.common import add_json, emit
from bigmodel.cli.registry import add_registry
from bigmodel.console import grid_table, kv_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "online",
        help="keep a registered model learning from a stream of labelled rows (prequential, drift, policy)",
        description="Every row is scored by the version the alias serves and by a learner (a copy "
        "taking one SGD step per row) before the learner trains on it. A drift detector watches the "
        "serving version's errors. Every --check-every rows, once the window holds --min-samples "
        "rows: the learner is registered and the alias moved to it if it beats the serving version "
        "by --margin on the window; a promotion that then trails the version before it by --margin "
        "is rolled back; a learner that trails by --margin restarts from the serving version.",
    )
    p.add_argument("model", help="registry NAME (the production alias) or NAME@ALIAS")
    p.add_argument(
        "--stream",
        required=True,
        metavar="FILE|-",
        help="CSV or JSON-lines file of rows with the model's features and label column; - reads stdin",
    )
    add_registry(p)
    p.add_argument("--window", type=int, default=500, help="rows in the comparison window")
    p.add_argument("--min-samples", type=int, default=200, help="rows in the window before a decision")
    p.add_argument("--check-every", type=int, default=50, help="rows between decisions")
    p.add_argument("--margin", type=float, default=0.02, help="accuracy points (or relative mse) to beat by")
    p.add_argument("--lr", type=float, default=0.03, help="SGD learning rate of the learner")
    p.add_argument("--detector", choices=["adwin", "page_hinkley"], default="adwin")
    p.add_argument("--dry-run", action="store_true", help="decide and report, but register nothing")
    p.add_argument(
        "--plot", metavar="PNG", help="draw prequential accuracy over the stream (never overwritten)"
    )
    add_json(p)
    p.set_defaults(func=_online)


def _online(args: argparse.Namespace) -> None:
    from bigmodel.online_learning import online

    result = online(
        args.model,
        args.stream,
        registry=args.registry,
        plot=args.plot,
        progress=not args.json,
        window=args.window,
        min_samples=args.min_samples,
        check_every=args.check_every,
        margin=args.margin,
        lr=args.lr,
        detector=args.detector,
        publish=not args.dry_run,
    )

    def tables() -> list[Any]:
        m = result["metric"]
        summary = {
            "rows": result["rows"],
            f"prequential {m}, serving": result["prequential"]["serving"],
            f"prequential {m}, learner": result["prequential"]["learner"],
            f"window {m}, serving": result["window"]["serving"],
            f"window {m}, learner": result["window"]["learner"],
            "drifts detected": result["drifts"],
            "promotions": result["promotions"],
            "rollbacks": result["rollbacks"],
            "learner resets": result["resets"],
            "started from version": result["started_from"],
            f"{result['alias']} now": result["aliases"].get(result["alias"], "-"),
        }
        shown = [
            [e["row"], e["event"], e.get("version") or "-", e.get("serving", "-"), e.get("learner", "-")]
            for e in result["events"]
        ]
        out: list[Any] = [kv_table(f"online {result['model']}@{result['alias']}", summary)]
        if shown:
            out.append(
                grid_table("events", ["row", "event", "version", f"serving {m}", f"learner {m}"], shown[-30:])
            )
        if "plot" in result:
            out.append(f"plot: {result['plot']}")
        return out

    emit(args, result, tables)
