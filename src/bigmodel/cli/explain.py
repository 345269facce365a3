"""``bigmodel explain``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bigmodel.cli.common import add_json, emit
from bigmodel.cli.registry import add_registry
from bigmodel.console import fmt, grid_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "explain",
        help="per-feature attributions of a model's answers for the rows of a CSV (Captum)",
        description="Explains, for each row, the target class's log-odds (binary), logit (multiclass) "
        "or the prediction (regression) against a baseline: the training mean of every feature "
        "(gradient_shap: samples around it). Integrated Gradients reports its convergence delta.",
    )
    p.add_argument("model", help="model directory or registry NAME[:VERSION|@ALIAS]")
    add_registry(p)
    p.add_argument("--input", required=True, help="CSV or Parquet file with the model's feature columns")
    p.add_argument(
        "--method",
        choices=["integrated_gradients", "gradient_shap", "feature_ablation"],
        default="integrated_gradients",
    )
    p.add_argument("--target", help="class to explain (label or code; default: each row's prediction)")
    p.add_argument("--rows", type=int, help="explain only the first N rows")
    p.add_argument("--steps", type=int, default=64, help="integration steps for integrated_gradients")
    p.add_argument(
        "--out",
        help="bar chart PNG of the top features (default: explain-<input>-<method>.png, never overwritten)",
    )
    add_json(p)
    p.set_defaults(func=_explain)


def _default_png(input_path: str, method: str) -> Path:
    stem = f"explain-{Path(input_path).stem}-{method}"
    path, i = Path(f"{stem}.png"), 1
    while path.exists():
        path, i = Path(f"{stem}-{i}.png"), i + 1
    return path


def _explain(args: argparse.Namespace) -> None:
    from bigmodel.explanations import explain

    out = args.out or _default_png(args.input, args.method)
    result = explain(
        args.model,
        args.input,
        method=args.method,
        target=args.target,
        out=out,
        rows=args.rows,
        n_steps=args.steps,
        registry=args.registry,
    )

    def tables() -> list[Any]:
        ig = "n_steps" in result
        header = ["row", "target", "output", "top features (attribution)"] + (["delta", "flag"] if ig else [])
        shown = []
        for r in result["rows"][:20]:
            top = ", ".join(f"{k} {fmt(v)}" for k, v in r["top"][:3])
            line = [r["row"], r.get("target", "-"), r["output"], top]
            if ig:
                line += [r["convergence_delta"], "!" if r["delta_flagged"] else ""]
            shown.append(line)
        more = f", first 20 of {len(result['rows'])}" if len(result["rows"]) > 20 else ""
        t1 = grid_table(
            f"{result['method']}: {result['explained_output']} vs {result['baseline']['kind']}{more}",
            header,
            shown,
        )
        t2 = grid_table(
            "mean |attribution| (top 10)",
            ["feature", "importance"],
            [[k, v] for k, v in list(result["importance"].items())[:10]],
        )
        out_tables: list[Any] = [t1, t2]
        if ig and result["flagged"]:
            out_tables.append(
                f"{result['flagged']} row(s) flagged: |convergence delta| > 5% of |F(x) - F(baseline)|; try more --steps"
            )
        out_tables.append(f"bar chart: {result['png']}")
        return out_tables

    emit(args, result, tables)
