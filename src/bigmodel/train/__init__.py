"""Training: ``train(cfg)`` and ``evaluate(model_dir)``."""

from bigmodel.train.evaluate import evaluate
from bigmodel.train.loop import train

__all__ = ["evaluate", "train"]
