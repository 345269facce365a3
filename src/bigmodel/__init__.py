"""bigmodel: the whole life of a model on big data, from a Parquet folder to a served model.

The Python API mirrors the CLI verbs one to one::

    import bigmodel
    cfg = bigmodel.TrainConfig(data={"dataset": "breast_cancer"}, dist={"workers": 2})
    summary = bigmodel.train(cfg)
    bigmodel.evaluate(summary["run_dir"])
"""

from typing import TYPE_CHECKING, Any

from bigmodel.artifacts import load_model
from bigmodel.config import TrainConfig
from bigmodel.data import dataset_stats, generate_synthetic, generate_text, prepare, prepare_text
from bigmodel.errors import BigModelError
from bigmodel.explain import explain
from bigmodel.federated import FederatedConfig, federated
from bigmodel.online import online  # after the subpackage import, so the name is the function
from bigmodel.train import consolidate, evaluate, train

if TYPE_CHECKING:
    from bigmodel.compress.distill import distill
    from bigmodel.compress.prune import prune
    from bigmodel.compress.quantize import quantize
    from bigmodel.compress.report import report as compression_report
    from bigmodel.registry import Registry, resolve
    from bigmodel.serve.client import predict

# The registry and its client pull in SQLAlchemy and fsspec, compression torch.export and ONNX:
# imported on first use, so `import bigmodel` (every CLI verb, every worker process) stays fast. The server is
# `bigmodel.serve.serve(ServeConfig(...))`: a name here would clash with the subpackage.
_LAZY = {
    "Registry": "bigmodel.registry",
    "resolve": "bigmodel.registry",
    "predict": "bigmodel.serve.client",
    "compression_report": "bigmodel.compress",
    "distill": "bigmodel.compress",
    "prune": "bigmodel.compress",
    "quantize": "bigmodel.compress",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bigmodel' has no attribute {name!r}")


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
__version__ = "0.1.0"
