"""bigmodel: the whole life of a model on big data, from a Parquet folder to a served model.

The Python API mirrors the CLI verbs one to one::

    import bigmodel
    cfg = bigmodel.TrainConfig(data={"dataset": "breast_cancer"}, dist={"workers": 2})
    summary = bigmodel.train(cfg)
    bigmodel.evaluate(summary["run_dir"])
"""

from bigmodel.artifacts import load_model
from bigmodel.config import TrainConfig
from bigmodel.data import dataset_stats, generate_synthetic, prepare
from bigmodel.errors import BigModelError
from bigmodel.explain import explain
from bigmodel.federated import FederatedConfig, federated
from bigmodel.train import evaluate, train

__all__ = [
    "BigModelError",
    "FederatedConfig",
    "TrainConfig",
    "dataset_stats",
    "evaluate",
    "explain",
    "federated",
    "generate_synthetic",
    "load_model",
    "prepare",
    "train",
]
__version__ = "0.1.0"
