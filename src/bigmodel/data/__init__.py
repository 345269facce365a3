"""Data that does not fit in memory: prepare, generate, and stream in world-size-independent batches."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bigmodel.data.builtin import BUILTINS, resolve
from bigmodel.data.manifest import Manifest, load_manifest
from bigmodel.data.prepare import prepare
from bigmodel.data.synthetic import generate_synthetic
from bigmodel.data.text import generate_text, prepare_text
from bigmodel.lazy import lazy_exports

if TYPE_CHECKING:
    from bigmodel.data.stream import Batch, ParquetStream, iterate

# The reader hands out torch tensors; preparing and inspecting data does not need torch.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__, {name: "bigmodel.data.stream" for name in ("Batch", "ParquetStream", "iterate")}
    )

__all__ = [
    "BUILTINS",
    "Batch",
    "Manifest",
    "ParquetStream",
    "dataset_stats",
    "generate_synthetic",
    "generate_text",
    "iterate",
    "load_manifest",
    "prepare",
    "prepare_text",
    "resolve",
]


def dataset_stats(path: str | Path) -> Manifest:
    """The manifest of a prepared dataset (or built-in name): splits, rows, features, statistics."""
    from bigmodel.data import remote

    if remote.is_url(str(path)):  # the manifest says it all: no need to copy the shards
        return remote.read_manifest(str(path))
    return resolve(str(path))[1]
