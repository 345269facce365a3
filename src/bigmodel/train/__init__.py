"""Training: ``train(cfg)``, ``evaluate(model_dir)`` and ``consolidate(run_dir, dst)``."""

from bigmodel.train.consolidate import consolidate
from bigmodel.train.evaluate import evaluate
from bigmodel.train.loop import train

__all__ = ["consolidate", "evaluate", "train"]
