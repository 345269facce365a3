"""``bigmodel data prepare|generate|stats``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from bigmodel.cli.common import add_json, emit
from bigmodel.console import grid_table, kv_table
from bigmodel.errors import BigModelError
from bigmodel.stop import sigterm_unwinds

if TYPE_CHECKING:
    from bigmodel.data.manifest import Manifest


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("data", help="prepare, generate and inspect datasets")
    dsub = p.add_subparsers(dest="data_verb", required=True, metavar="ACTION")

    q = dsub.add_parser(
        "prepare", help="CSV/Parquet file or folder (local or fsspec URL) -> Parquet shards + manifest"
    )
    q.add_argument(
        "src", help="CSV/Parquet file or folder, local or an fsspec URL (s3://...), or delta:PATH[@VERSION]"
    )
    q.add_argument("dst")
    q.add_argument("--label", default="label", help="label column (default: label)")
    q.add_argument("--val-fraction", type=float, default=0.2)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument(
        "--task",
        choices=["binary", "multiclass", "regression", "lm"],
        default=None,
        help="default: regression for a float label or an integer one with many distinct values (over 20 and 5%% of the rows), else classification; lm: SRC is text",
    )
    q.add_argument("--context", type=int, default=256, help="lm: bytes a model reads per row")
    q.add_argument(
        "--drop",
        type=lambda v: [c for c in v.split(",") if c],
        action="extend",
        default=[],
        metavar="COL[,COL...]",
        help="columns to leave out (IDs, dates, free text); repeatable",
    )
    q.add_argument(
        "--no-shuffle",
        dest="shuffle",
        action="store_false",
        help="keep the source's row order (default: shuffle the rows once, by --seed, in bounded memory)",
    )
    q.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="local (default): this process; spark: Spark executors, same output (needs Java 17+)",
    )
    q.add_argument("--master", default="local[2]", help="spark: local[N], spark://HOST:7077, yarn, k8s://...")
    q.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="spark: a Spark setting (repeatable)",
    )
    add_json(q)
    q.set_defaults(func=_prepare)

    g = dsub.add_parser(
        "generate", help="write a seeded synthetic (tabular) or text dataset in bounded memory"
    )
    g.add_argument("kind", choices=["synthetic", "text"])
    g.add_argument("dst")
    g.add_argument("--rows", type=int, help="synthetic: rows")
    g.add_argument("--features", type=int, help="synthetic: features")
    g.add_argument("--bytes", type=int, default=2_000_000, help="text: bytes of text")
    g.add_argument("--context", type=int, default=128, help="text: bytes a model reads per row")
    g.add_argument("--task", choices=["binary", "multiclass", "regression"], default="binary")
    g.add_argument("--classes", type=int, default=2)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--val-fraction", type=float, default=0.2)
    add_json(g)
    g.set_defaults(func=_generate)

    s = dsub.add_parser("stats", help="show a prepared dataset's manifest and feature statistics")
    s.add_argument("dir")
    add_json(s)
    s.set_defaults(func=_stats)


def _summary(m: Manifest, path: str) -> dict[str, Any]:
    return {
        "path": path,
        "name": m.name,
        "task": m.task,
        "features": len(m.features),
        "classes": m.num_classes,
        **({"context": m.context} if m.task == "lm" else {}),
        "rows": {k: v.rows for k, v in m.splits.items()},
        "files": sum(len(v.files) for v in m.splits.values()),
        "shuffled": m.shuffled,
        "content_hash": m.content_hash,
    }


def _manifest_tables(m: Manifest, path: str) -> list[Any]:
    s = _summary(m, path)
    rows = {
        "path": path,
        "task": m.task,
        "features": s["features"],
        "classes": s["classes"] or "-",
        **{f"{k} rows": v for k, v in s["rows"].items()},
        "shard files": s["files"],
        "row order": f"shuffled (seed {m.seed})" if m.shuffled else "source order",
        "content hash": m.content_hash[:16] + "...",
    }
    return [kv_table(f"dataset {m.name}", rows)]


@sigterm_unwinds()
def _prepare(args: argparse.Namespace) -> None:
    from bigmodel.data import prepare

    m = prepare(
        args.src,
        args.dst,
        label=args.label,
        val_fraction=args.val_fraction,
        seed=args.seed,
        task=args.task,
        context=args.context,
        shuffle=args.shuffle,
        drop=args.drop,
        progress=not args.json,
        engine=args.engine,
        master=args.master,
        spark_conf=_spark_conf(args.spark_conf),
    )
    emit(args, _summary(m, args.dst), lambda: _manifest_tables(m, args.dst))


def _spark_conf(pairs: list[str]) -> dict[str, str]:
    conf = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        if not eq or not key:
            raise BigModelError(f"--spark-conf expects KEY=VALUE, got {p!r}")
        conf[key.strip()] = value
    return conf


@sigterm_unwinds()
def _generate(args: argparse.Namespace) -> None:
    from bigmodel.data import generate_synthetic, generate_text

    if args.kind == "text":
        m = generate_text(
            args.dst, n_bytes=args.bytes, context=args.context, seed=args.seed, val_fraction=args.val_fraction
        )
        emit(args, _summary(m, args.dst), lambda: _manifest_tables(m, args.dst))
        return
    if args.rows is None or args.features is None:
        raise BigModelError("data generate synthetic needs --rows N and --features F")
    m = generate_synthetic(
        args.dst,
        rows=args.rows,
        features=args.features,
        task=args.task,
        classes=args.classes,
        seed=args.seed,
        val_fraction=args.val_fraction,
        progress=not args.json,
    )
    emit(args, _summary(m, args.dst), lambda: _manifest_tables(m, args.dst))


def _stats(args: argparse.Namespace) -> None:
    from bigmodel.data import dataset_stats

    m = dataset_stats(args.dir)
    result = {
        **_summary(m, args.dir),
        "feature_names": m.features,
        "mean": m.mean,
        "std": m.std,
        "label": m.label,
        "label_values": m.label_values,
    }

    def tables() -> list[Any]:
        if m.task == "lm":  # one column of byte rows: no per-feature statistics
            return _manifest_tables(m, args.dir)
        shown = list(zip(m.features, m.mean, m.std, strict=True))[:30]
        t = grid_table(
            f"features (training split{', first 30' if len(m.features) > 30 else ''})",
            ["feature", "mean", "std"],
            [list(r) for r in shown],
        )
        return [*_manifest_tables(m, args.dir), t]

    emit(args, result, tables)
