"""The side-by-side report: what compression saved and what it cost, as a table and as plots.

``bigmodel compress report DIR...`` measures several model directories together (latencies
interleaved, same thread count) and draws metric-vs-size and metric-vs-latency plots. File bytes
are what the runtime that serves a model reads (``measure.served_bytes``), so exporting a model to
ONNX does not change its size in the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from bigmodel.compress.measure import lower_is_better, profile_all
from bigmodel.console import fmt, grid_table
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_path, make_dir

PLOTS = ("size.png", "latency.png")  # metric vs file bytes, metric vs batch-64 latency

ROWS = [
    ("parameters", "params"),
    ("non-zero parameters", "nonzero_params"),
    ("file bytes", "file_bytes"),
    ("latency ms, batch 1", "latency_ms_b1"),
    ("latency ms, batch 32", "latency_ms_b32"),
    ("latency ms, batch 64", "latency_ms_b64"),
    ("tokens/s, batch 1", "tokens_per_s_b1"),  # language models: greedy generation, KV cache
    ("tokens/s, batch 16", "tokens_per_s_b16"),
]


def ratio_words(original: float, compressed: float, latency: bool) -> str:
    """``3.4x smaller`` / ``1.9x larger`` (``faster`` / ``slower`` for latency), never ``0.54x smaller``."""
    better, worse = ("faster", "slower") if latency else ("smaller", "larger")
    if not compressed:
        return f"{fmt(float('inf'))}x {better}"
    ratio = original / compressed
    return f"{fmt(ratio)}x {better}" if ratio >= 1 else f"{fmt(1 / ratio)}x {worse}"


def metric_label(name: str) -> str:
    """The metric's name, saying which way is better when it is not the usual higher-is-better."""
    return f"{name}, lower is better" if lower_is_better(name) else name


def metric_words(name: str, original: dict[str, Any], compressed: dict[str, Any]) -> str:
    """``+0.0123 (0.8% worse)``: the change, and whether it is for the better."""
    o, c = original["metric"], compressed["metric"]
    delta = c - o
    if not delta:
        return f"{delta:+.4f}"
    better = delta < 0 if lower_is_better(name) else delta > 0
    return f"{delta:+.4f} ({abs(delta) / max(abs(o), 1e-12):.2%} {'better' if better else 'worse'})"


def side_by_side_table(result: dict[str, Any], title: str) -> Table:
    """Original | compressed | ratio, one row per measure, the metric last."""
    o, c = result["original"], result["compressed"]
    rows: list[list[Any]] = []
    for label, key in ROWS:
        if key in o and key in c:
            if key.startswith("tokens_per_s"):  # a rate: more is faster, so the ratio turns round
                words = ratio_words(c[key], o[key], True)
            else:
                words = ratio_words(o[key], c[key], key.startswith("latency"))
            rows.append([label, o[key], c[key], words])
    name = o.get("metric_name", "metric")
    label = f"{name} (validation{', lower is better' if lower_is_better(name) else ''})"
    rows.append([label, o["metric"], c["metric"], metric_words(name, o, c)])
    rows.append(["runtime", o.get("runtime", "-"), c.get("runtime", "-"), ""])
    return grid_table(title, ["", "original", "compressed", "ratio"], rows)


def report(
    paths: list[str | Path], *, plots: str | Path | None = None, threads: int = 1, runs: int = 100
) -> dict[str, Any]:
    """Measure several model directories side by side; draw ``<plots>/size.png`` and
    ``<plots>/latency.png`` (metric against file bytes and against batch-64 latency)."""
    if not paths:
        raise BigModelError("compress report needs at least one model directory")
    if plots is not None:  # checked before the measuring, which takes a while
        for name in PLOTS:
            if (Path(plots) / name).exists():
                raise BigModelError(
                    f"{Path(plots) / name} already exists (choose another --plots; nothing was overwritten)"
                )
        make_dir(plots, "--plots folder")
    models = profile_all(list(paths), threads=threads, runs=runs)
    out: dict[str, Any] = {"models": models, "threads": threads, "plots": {}}
    if plots is not None:
        out["plots"] = draw(models, Path(plots))
    return out


def report_table(models: list[dict[str, Any]]) -> Table:
    """One row per model; "(ORT)" marks those that run on ONNX Runtime. Language models show
    tokens/s of generation at batch 1 and 16 where other models show latency."""
    lm = "tokens_per_s_b1" in models[0]
    speed = ["tokens_per_s_b1", "tokens_per_s_b16"] if lm else ["latency_ms_b1", "latency_ms_b64"]
    name = models[0].get("metric_name", "metric")
    header = [
        "model",
        "params",
        "non-zero",
        "file bytes",
        *(["tok/s b1", "tok/s b16"] if lm else ["ms b1", "ms b64"]),
        metric_label(name) if lm else "metric",
    ]
    rows = [
        [
            Path(m["path"]).name + (" (ORT)" if m["runtime"] == "onnxruntime" else ""),
            m["params"],
            m.get("nonzero_params", m["params"]),
            m["file_bytes"],
            *(m.get(k, "-") for k in speed),
            m["metric"],
        ]
        for m in models
    ]
    return grid_table("compressed models side by side ((ORT): ONNX Runtime, else PyTorch)", header, rows)


def draw(models: list[dict[str, Any]], folder: Path) -> dict[str, str]:
    """Metric vs size and metric vs latency, one labelled point per model (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = models[0].get("metric_name", "metric")
    speed = (
        ("tokens_per_s_b16", "tokens/s at batch 16, generation (log scale)")
        if "tokens_per_s_b16" in models[0]
        else ("latency_ms_b64", "latency at batch 64, ms (log scale)")
    )
    files = {}
    for (key, xlabel), name in zip((("file_bytes", "file bytes (log scale)"), speed), PLOTS, strict=True):
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in models:
            ax.scatter(m[key], m["metric"])
            ax.annotate(
                Path(m["path"]).name,
                (m[key], m["metric"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"validation {metric_label(metric)}")
        against = "size" if key == "file_bytes" else "tokens/s" if "tokens" in key else "latency"
        ax.set_title(f"{metric} vs {against}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(folder / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        files[key] = str(folder / name)
    return files
