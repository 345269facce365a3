"""``bigmodel compress prune|quantize|distill|report``."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from bigmodel.cli.common import add_json, emit, int_list
from bigmodel.console import kv_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("compress", help="prune, quantize or distil a model; compare models side by side")
    csub = p.add_subparsers(dest="compress_verb", required=True, metavar="ACTION")

    q = csub.add_parser(
        "prune", help="magnitude pruning (LAMP, gradual) or structured neuron pruning + fine-tuning"
    )
    q.add_argument("model_dir")
    q.add_argument(
        "--sparsity", type=float, default=0.9, help="fraction of weights (or neurons) removed, in [0, 1)"
    )
    q.add_argument("--structured", action="store_true", help="remove whole neurons; rebuild smaller layers")
    q.add_argument(
        "--finetune-epochs", type=int, default=10, help="epochs of fine-tuning in all (0: one shot)"
    )
    q.add_argument("--steps", type=int, default=4, help="pruning steps of the gradual schedule (default 4)")
    q.add_argument("--scoring", default="lamp", help="lamp (default; no layer collapse) | magnitude")
    q.add_argument("--workers", type=int, default=1, help="fine-tune on N local worker processes (DDP)")
    _common(q)
    q.set_defaults(func=_prune)

    z = csub.add_parser(
        "quantize",
        help="int8 (dynamic/static) or fp16/bf16, accuracy-aware; 'minilm' names the real transformer",
    )
    z.add_argument(
        "model", help="a model directory, or 'minilm' (all-MiniLM-L6-v2 from bigmodel[transformers])"
    )
    z.add_argument(
        "--method",
        default="dynamic",
        help="dynamic | static | fp16 | bf16 | fp32 (minilm only: the pretrained encoder unchanged)",
    )
    z.add_argument("--backend", default=None, help="onnxruntime (int8 default) | torch (fp16/bf16 default)")
    z.add_argument(
        "--max-drop", type=float, default=0.01, help="largest relative metric drop allowed (default 0.01)"
    )
    z.add_argument("--calibration-batches", type=int, default=8, help="training batches for static int8")
    z.add_argument(
        "--smooth", type=float, default=None, help="SmoothQuant alpha (minilm default 0.75; else off)"
    )
    _common(z)
    z.set_defaults(func=_quantize)

    d = csub.add_parser("distill", help="train a small student from a teacher's softened outputs")
    d.add_argument("teacher_dir")
    d.add_argument("--hidden", type=int_list, help="mlp teacher: student hidden sizes, e.g. 32,16")
    d.add_argument("--size", help="language model teacher: student size (tiny | mini | small | ...)")
    d.add_argument("--temperature", type=float, default=4.0)
    d.add_argument(
        "--alpha", type=float, default=0.9, help="weight of the teacher's soft targets (rest: labels)"
    )
    d.add_argument("--epochs", type=int, default=None, help="default: the teacher's epochs")
    d.add_argument(
        "--max-steps", type=int, default=None, help="stop after N steps (default: the teacher's cap)"
    )
    d.add_argument("--lr", type=float, default=None, help="default: the teacher's learning rate")
    d.add_argument("--workers", type=int, default=1, help="train on N local worker processes (DDP)")
    d.add_argument("--seed", type=int, default=0)
    _common(d)
    d.set_defaults(func=_distill)

    r = csub.add_parser(
        "report", help="measure model directories side by side; plot metric vs size and latency"
    )
    r.add_argument("model_dirs", nargs="+")
    r.add_argument(
        "--plots",
        help="folder for size.png and latency.png (tokens/s for language models; default compress-report-<time>; never overwritten)",
    )
    r.add_argument("--threads", type=int, default=1, help="threads for every latency (default 1)")
    r.add_argument("--runs", type=int, default=100, help="timed runs at batch 1 (a quarter at batch 64)")
    add_json(r)
    r.set_defaults(func=_report)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="new model directory (default: beside the source); never overwritten")
    p.add_argument("--threads", type=int, default=1, help="threads for every latency (default 1)")
    p.add_argument("--runs", type=int, default=100, help="timed runs at batch 1 (a quarter at batch 64)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_json(p)


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    """The flags every compress verb shares: where to write, how to time."""
    return {"out": args.out, "threads": args.threads, "runs": args.runs}


def _tables(result: dict[str, Any], title: str, details: dict[str, Any]) -> list[Any]:
    from bigmodel.compress.report import side_by_side_table

    return [
        side_by_side_table(result, title),
        kv_table("details", {"model dir": result["model_dir"], **details}),
    ]


def _prune(args: argparse.Namespace) -> None:
    from bigmodel.compress import prune

    result = prune(
        args.model_dir,
        sparsity=args.sparsity,
        structured=args.structured,
        finetune_epochs=args.finetune_epochs,
        steps=args.steps,
        scoring=args.scoring,
        workers=args.workers,
        progress=not (args.no_progress or args.json),
        **_measure(args),
    )
    p = result["params"]
    details = {
        "kind": p["kind"],
        "sparsity (measured)": p["measured_sparsity"] if p["kind"] == "unstructured" else "-",
        "schedule": ", ".join(f"{s:.3f}" for s in p["schedule"]),
        "fine-tune epochs": p["finetune_epochs"],
    }
    emit(args, result, lambda: _tables(result, f"prune {args.model_dir}", details))


def _quantize(args: argparse.Namespace) -> None:
    from bigmodel.compress import quantize

    result = quantize(
        args.model,
        method=args.method,
        backend=args.backend,
        max_drop=args.max_drop,
        calibration_batches=args.calibration_batches,
        smooth=args.smooth,
        **_measure(args),
    )
    p = result["params"]
    details = {
        "method": f"{p['method']} on {p['backend']}",
        "kept in float": ", ".join(p.get("kept_float") or []) or "none",
    }
    if p.get("smooth_alpha") is not None:
        details["SmoothQuant alpha"] = p["smooth_alpha"]
    emit(args, result, lambda: _tables(result, f"quantize {args.model}", details))


def _distill(args: argparse.Namespace) -> None:
    from bigmodel.compress import distill

    result = distill(
        args.teacher_dir,
        hidden=args.hidden,
        size=args.size,
        max_steps=args.max_steps,
        temperature=args.temperature,
        alpha=args.alpha,
        epochs=args.epochs,
        lr=args.lr,
        workers=args.workers,
        seed=args.seed,
        progress=not (args.no_progress or args.json),
        **_measure(args),
    )
    p = result["params"]
    details = {
        "student": f"transformer {p['size']}" if "size" in p else f"mlp {p['hidden']}",
        "steps": p["steps"],
        "temperature": p["temperature"],
        "alpha": p["alpha"],
        "epochs": p["epochs"],
    }
    emit(args, result, lambda: _tables(result, f"distil {args.teacher_dir} (teacher) -> student", details))


def _report(args: argparse.Namespace) -> None:
    from bigmodel.compress import compression_report
    from bigmodel.compress.report import report_table

    plots = args.plots or f"compress-report-{dt.datetime.now():%Y%m%d-%H%M%S}"  # each run its own
    result = compression_report(args.model_dirs, plots=plots, threads=args.threads, runs=args.runs)
    emit(
        args,
        result,
        lambda: [report_table(result["models"]), kv_table("plots", result["plots"] or {"plots": "none"})],
    )
