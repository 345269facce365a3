"""The bar chart of the top features of an explanation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bigmodel.fsutil import atomic_path


def bar_chart(result: dict[str, Any], path: str | Path, top: int = 15, title: str = "") -> None:
    """One row: its signed attributions; several rows: the mean |attribution| of each feature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    if len(rows) == 1:
        pairs = sorted(rows[0]["attributions"].items(), key=lambda kv: -abs(kv[1]))[:top]
        xlabel = f"attribution to the {result['explained_output']}"
    else:
        pairs = list(result["importance"].items())[:top]
        xlabel = f"mean |attribution| over {len(rows)} rows"
    names = [k for k, _ in pairs][::-1]  # largest at the top
    vals = [v for _, v in pairs][::-1]
    fig, ax = plt.subplots(figsize=(7.0, 0.35 * len(names) + 1.4), dpi=110)
    ax.barh(names, vals, color=["#c0392b" if v < 0 else "#2471a3" for v in vals])
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel(xlabel)
    ax.set_title(title or result["method"].replace("_", " "))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
