"""Prequential score over the stream: serving version vs learner, with drifts and decisions marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bigmodel.fsutil import atomic_path

EXTRA_COLORS = ("#7f8c8d", "#c2185b", "#d35400", "#17202a")
MARKS = {"drift": ("#c0392b", "--"), "promote": ("#27ae60", "-"), "rollback": ("#8e44ad", ":")}


def prequential_plot(
    curve: Sequence[Sequence[float]],
    events: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    metric: str = "accuracy",
    title: str = "",
    extra: dict[str, Sequence[Sequence[float]]] | None = None,
) -> None:
    """``curve``: [row, serving, learner] per bucket of rows; ``extra``: more named [row, score] lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 3.6), dpi=110)
    rows = [c[0] for c in curve]
    ax.plot(rows, [c[1] for c in curve], label="serving version (alias)", color="#2471a3", lw=1.6)
    ax.plot(rows, [c[2] for c in curve], label="learner", color="#e67e22", lw=1.0, alpha=0.8)
    for (name, line), color in zip((extra or {}).items(), EXTRA_COLORS, strict=False):
        ax.plot([p[0] for p in line], [p[1] for p in line], label=name, color=color, lw=1.0, alpha=0.8)
    seen: set[str] = set()
    for e in events:
        if e["event"] in MARKS:
            color, style = MARKS[e["event"]]
            label = e["event"] if e["event"] not in seen else None
            seen.add(e["event"])
            ax.axvline(e["row"], color=color, ls=style, lw=0.9, label=label)
    ax.set_xlabel("row of the stream")
    ax.set_ylabel(f"prequential {metric}")
    ax.set_title(title or "online learning")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
