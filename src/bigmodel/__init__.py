"""bigmodel: the whole life of a model on big data, from a Parquet folder to a served model.

The Python API mirrors the CLI verbs one to one::

    import bigmodel
    cfg = bigmodel.TrainConfig(data={"dataset": "breast_cancer"}, dist={"workers": 2})
    summary = bigmodel.train(cfg)
    bigmodel.evaluate(summary["run_dir"])
"""

from bigmodel.artifacts import load_model
from bigmodel.config import TrainConfig
from bigmodel.data import dataset_stats, generate_synthetic, generate_text, prepare, prepare_text
from bigmodel.errors import BigModelError
from bigmodel.train import consolidate, evaluate, train

__all__ = [
    "BigModelError",
    "TrainConfig",
    "consolidate",
    "dataset_stats",
    "evaluate",
    "generate_synthetic",
    "generate_text",
    "load_model",
    "prepare",
    "prepare_text",
    "train",
]
__version__ = "0.1.0"
