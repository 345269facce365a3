"""Validation quality per round, drawn from metrics.jsonl records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bigmodel.fsutil import atomic_path


def round_plot(records: list[dict[str, Any]], metric: str, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in records]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    ax.plot(
        rounds,
        [float(r.get(f"val_{metric}", "nan")) for r in records],
        marker="o" if len(rounds) <= 30 else None,
    )
    ax.set_xlabel("round")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
