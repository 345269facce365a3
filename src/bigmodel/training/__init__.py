"""Training: ``train(cfg)``, ``evaluate(model_dir)`` and ``consolidate(run_dir, dst)``.

torch is imported on first use (see ``bigmodel.lazy``), so ``import bigmodel`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bigmodel.lazy import lazy_exports

if TYPE_CHECKING:
    from bigmodel.config import TrainConfig
    from bigmodel.training.consolidation import consolidate
    from bigmodel.training.evaluation import evaluate
    from bigmodel.training.loop import OnEpoch


def train(cfg: TrainConfig, on_epoch: OnEpoch | None = None) -> dict[str, Any]:
    """Train a model as ``cfg`` says and write its run directory; return the summary (rank 0's).

    ``on_epoch(epochs_done, val_metrics)`` is called after each epoch's validation, by rank 0 (with
    ``workers > 1`` in its worker process, so it must pickle); returning False stops every rank
    there, as a tuner's pruner does. Not under torchrun or with restarts.

    Returns ``{"metrics", "train_loss", "world_size", "samples_per_s", "data_wait_fraction",
    "epochs", "steps", "seconds", "run_dir"}``.
    """
    # A thin function: `import bigmodel` stays light, torch loads when a run starts.
    from bigmodel.training.loop import train as run

    return run(cfg, on_epoch)


if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {"consolidate": "bigmodel.training.consolidation", "evaluate": "bigmodel.training.evaluation"},
    )
__all__ = ["consolidate", "evaluate", "train"]
