"""Data that does not fit in memory: prepare, generate, and stream in world-size-independent batches."""

from __future__ import annotations

from pathlib import Path

from bigmodel.data.builtin import BUILTINS, resolve
from bigmodel.data.manifest import Manifest, load_manifest
from bigmodel.data.prepare import prepare
from bigmodel.data.stream import Batch, ParquetStream, iterate
from bigmodel.data.synthetic import generate_synthetic
from bigmodel.data.text import generate_text, prepare_text

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
    return resolve(str(path))[1]
