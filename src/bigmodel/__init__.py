"""bigmodel: the whole life of a model on big data, from a Parquet folder to a served model.

The Python API mirrors the CLI verbs one to one::

    import bigmodel
    cfg = bigmodel.TrainConfig(data={"dataset": "breast_cancer"}, dist={"workers": 2})
    summary = bigmodel.train(cfg)
    bigmodel.evaluate(summary["run_dir"])
"""

from typing import TYPE_CHECKING

# The verbs train, online, explain and federated are functions here; their code lives in
# subpackages named for the stage (training, online_learning, explanations, federation), so a name
# on `bigmodel` is one thing. Those __init__ modules are light: torch loads when a function runs.
from bigmodel._version import __version__ as __version__
from bigmodel.config import TrainConfig
from bigmodel.errors import BigModelError
from bigmodel.explanations import explain
from bigmodel.federation import FederatedConfig, federated
from bigmodel.lazy import lazy_exports
from bigmodel.online_learning import online
from bigmodel.training import train

if TYPE_CHECKING:
    from bigmodel.artifacts import load_model
    from bigmodel.compress.distill import distill
    from bigmodel.compress.prune import prune
    from bigmodel.compress.quantize import quantize
    from bigmodel.compress.report import report as compression_report
    from bigmodel.data import dataset_stats, generate_synthetic, generate_text, prepare, prepare_text
    from bigmodel.registry import Registry, resolve
    from bigmodel.serve.client import predict
    from bigmodel.training import consolidate, evaluate

# Everything else is imported on first use, so `import bigmodel` (every CLI verb, every worker
# process) takes ~0.4 s instead of ~2 s: torch, pyarrow, SQLAlchemy, ONNX load only when needed.
# The server is `bigmodel.serve.serve(ServeConfig(...))`: a name here would clash with the subpackage.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "load_model": "bigmodel.artifacts",
            "compression_report": "bigmodel.compress",
            "distill": "bigmodel.compress",
            "prune": "bigmodel.compress",
            "quantize": "bigmodel.compress",
            "consolidate": "bigmodel.training",
            "evaluate": "bigmodel.training",
            "dataset_stats": "bigmodel.data",
            "generate_synthetic": "bigmodel.data",
            "generate_text": "bigmodel.data",
            "prepare": "bigmodel.data",
            "prepare_text": "bigmodel.data",
            "Registry": "bigmodel.registry",
            "resolve": "bigmodel.registry",
            "predict": "bigmodel.serve.client",
        },
    )

__all__ = [
    "BigModelError",
    "FederatedConfig",
    "Registry",
    "TrainConfig",
    "compression_report",
    "consolidate",
    "dataset_stats",
    "distill",
    "evaluate",
    "explain",
    "federated",
    "generate_synthetic",
    "generate_text",
    "load_model",
    "online",
    "predict",
    "prepare",
    "prepare_text",
    "prune",
    "quantize",
    "resolve",
    "train",
]
