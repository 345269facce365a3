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

from bigmodel.compress.measure import profile_all
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
]


def ratio_words(original: float, compressed: float, latency: bool) -> str:
    """``3.4x smaller`` / ``1.9x larger`` (``faster`` / ``slower`` for latency), never ``0.54x smaller``."""
    better, worse = ("faster", "slower") if latency else ("smaller", "larger")
    if not compressed:
        return f"{fmt(float('inf'))}x {better}"
    ratio = original / compressed
    return f"{fmt(ratio)}x {better}" if ratio >= 1 else f"{fmt(1 / ratio)}x {worse}"


def side_by_side_table(result: dict[str, Any], title: str) -> Table:
    """Original | compressed | ratio, one row per measure, the metric last."""
    o, c = result["original"], result["compressed"]
    rows: list[list[Any]] = []
    for label, key in ROWS:
        if key in o and key in c:
            rows.append([label, o[key], c[key], ratio_words(o[key], c[key], key.startswith("latency"))])
    delta = c["metric"] - o["metric"]
    rows.append([f"{o.get('metric_name', 'metric')} (validation)", o["metric"], c["metric"], f"{delta:+.4f}"])
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
    """One row per model; "(ORT)" marks those that run on ONNX Runtime."""
    header = ["model", "params", "non-zero", "file bytes", "ms b1", "ms b64", "metric"]
    rows = [
        [
            Path(m["path"]).name + (" (ORT)" if m["runtime"] == "onnxruntime" else ""),
            m["params"],
            m.get("nonzero_params", m["params"]),
            m["file_bytes"],
            m["latency_ms_b1"],
            m["latency_ms_b64"],
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
    files = {}
    for (key, xlabel), name in zip(
        (("file_bytes", "file bytes (log scale)"), ("latency_ms_b64", "latency at batch 64, ms (log scale)")),
        PLOTS,
        strict=True,
    ):
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
        ax.set_ylabel(f"validation {metric}")
        ax.set_title(f"{metric} vs {'size' if key == 'file_bytes' else 'latency'}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(folder / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        files[key] = str(folder / name)
    return files
