"""The loss curve of a run, drawn from metrics.jsonl records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bigmodel.fsutil import atomic_path


def loss_plot(records: list[dict[str, Any]], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    ax.plot(epochs, [r["train_loss"] for r in records], label="train")
    ax.plot(epochs, [r["val_loss"] for r in records], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
