"""``bigmodel registry register|alias|list|show|compare|delete|gc``."""

from __future__ import annotations

import argparse
from typing import Any

from bigmodel.cli.common import add_json, emit
from bigmodel.console import grid_table, kv_table


def add_registry(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry",
        metavar="DIR|URL",
        help="registry folder or fsspec URL (default: $BIGMODEL_REGISTRY or ~/.bigmodel/registry)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "registry", help="versioned model registry: register, alias, list, show, compare, delete, gc"
    )
    rsub = p.add_subparsers(dest="registry_verb", required=True, metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        q = rsub.add_parser(name, help=help)
        add_registry(q)
        add_json(q)
        return q

    q = action("register", "store a model directory as the next version of NAME")
    q.add_argument("model_dir")
    q.add_argument("--name", required=True)
    q.set_defaults(func=_register)

    q = action("alias", "point ALIAS (e.g. production, staging) of NAME at VERSION")
    q.add_argument("name")
    q.add_argument("version", type=int)
    q.add_argument("alias")
    q.set_defaults(func=_alias)

    q = action("list", "list versions (of NAME, or of every model)")
    q.add_argument("name", nargs="?")
    q.set_defaults(func=_list)

    q = action("show", "everything recorded about NAME[:VERSION|@ALIAS]")
    q.add_argument("ref")
    q.set_defaults(func=_show)

    q = action("compare", "versions side by side: REF REF ..., or every version of NAME")
    q.add_argument("refs", nargs="+")
    q.set_defaults(func=_compare)

    q = action("delete", "delete NAME:VERSION (an aliased version only with --force)")
    q.add_argument("ref")
    q.add_argument("--force", action="store_true", help="also delete a version an alias points at")
    q.set_defaults(func=_delete)

    q = action("gc", "remove what killed processes left (temporary blobs, stale checkouts)")
    q.add_argument(
        "--older-than", type=float, default=3600.0, metavar="S", help="only what is older (seconds)"
    )
    q.set_defaults(func=_gc)


def _reg(args: argparse.Namespace, *, create: bool = False) -> Any:
    from bigmodel.registry import Registry

    return Registry(args.registry, create=create)


# the headline metric of each kind of model, first found wins: a language model's bits per byte
# (its next-byte accuracy is a side figure), an encoder's cosine to fp32, a classifier's accuracy
PRIMARY = ("bits_per_byte", "cosine_to_fp32", "accuracy", "r2")


def _primary(rec: dict[str, Any]) -> Any:
    m = rec["metrics"]
    for key in PRIMARY:
        if key in m:
            return f"{m[key]:.4g} {key}" if key in ("bits_per_byte", "cosine_to_fp32") else m[key]
    return "-"


def _parent(rec: dict[str, Any]) -> str:
    """Registered parent versions, else the path the parent was compressed or trained from."""
    return ", ".join(rec["parent_refs"]) or ((rec["parent"] or {}).get("path") or "-")


def _summary(rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": rec["ref"],
        "aliases": ", ".join(rec["aliases"]) or "-",
        "task": rec["task"],
        "architecture": _arch(rec),
        "method": rec["method"],
        "parent": _parent(rec),
        **{k: v for k, v in rec["metrics"].items()},
        "bytes": rec["bytes"],
        "runtimes": "pytorch, onnxruntime" if rec["onnx"] else "pytorch",
        "dataset": rec["dataset"] or "-",
        "data manifest hash": (rec["data_manifest_hash"] or "-")[:16],
        "digest": rec["digest"][:16],
        "registered": rec["created_at"],
        "source": rec["source"],
    }


def _arch(rec: dict[str, Any]) -> str:
    a = rec["architecture"] or {}
    if a.get("name") == "mlp":
        return f"mlp {a['in_features']}-{'-'.join(map(str, a['hidden']))}-{a['out_features']}"
    return str(a.get("name", "-"))


def _register(args: argparse.Namespace) -> None:
    rec = _reg(args, create=True).register(args.model_dir, args.name)
    emit(args, rec, lambda: [kv_table(f"registered {rec['ref']}", _summary(rec))])


def _alias(args: argparse.Namespace) -> None:
    rec = _reg(args).alias(args.name, args.version, args.alias)
    emit(args, rec, lambda: [kv_table(f"{args.name}@{args.alias} -> {rec['ref']}", _summary(rec))])


def _grid(title: str, recs: list[dict[str, Any]]) -> Any:
    header = ["model", "aliases", "task", "architecture", "method", "metric", "bytes", "onnx"]
    rows = [
        [
            r["ref"],
            ", ".join(r["aliases"]) or "-",
            r["task"],
            _arch(r),
            r["method"],
            _primary(r),
            r["bytes"],
            "yes" if r["onnx"] else "no",
        ]
        for r in recs
    ]
    return grid_table(title, header, rows)


def _list(args: argparse.Namespace) -> None:
    reg = _reg(args)
    recs = reg.versions(args.name)
    emit(
        args,
        {"registry": reg.location, "versions": recs},
        lambda: [_grid(f"registry {reg.location}", recs)],
    )


def _show(args: argparse.Namespace) -> None:
    rec = _reg(args).show(args.ref)

    def tables() -> list[Any]:
        files = grid_table(
            "artifacts",
            ["file", "bytes", "sha256"],
            [[f, i["bytes"], i["sha256"]] for f, i in rec["files"].items()],
        )
        return [kv_table(rec["ref"], _summary(rec)), files]

    emit(args, rec, tables)


def _compare(args: argparse.Namespace) -> None:
    recs = _reg(args).compare(args.refs)
    keys = sorted({k for r in recs for k in r["metrics"]})
    header = ["model", "aliases", "method", "parent", *keys, "bytes", "onnx", "digest"]
    rows = [
        [
            r["ref"],
            ", ".join(r["aliases"]) or "-",
            r["method"],
            _parent(r),
            *[r["metrics"].get(k, "-") for k in keys],
            r["bytes"],
            "yes" if r["onnx"] else "no",
            r["digest"][:12],
        ]
        for r in recs
    ]
    emit(args, {"versions": recs}, lambda: [grid_table("compare", header, rows)])


def _delete(args: argparse.Namespace) -> None:
    out = _reg(args).delete(args.ref, force=args.force)
    emit(args, out, lambda: [kv_table(f"deleted {out['name']}:{out['version']}", out)])


def _gc(args: argparse.Namespace) -> None:
    if args.older_than < 0:
        from bigmodel.errors import BigModelError

        raise BigModelError(f"--older-than {args.older_than}: must be >= 0 seconds")
    reg = _reg(args)
    out = reg.gc(older_than_s=args.older_than)
    summary = {
        "temporary blobs removed": len(out["temporary_blobs"]),
        "checkouts removed": len(out["checkouts"]),
    }
    emit(args, {"registry": reg.location, **out}, lambda: [kv_table(f"gc {reg.location}", summary)])
