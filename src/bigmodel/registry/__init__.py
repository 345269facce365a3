"""The versioned model registry: ``register`` a model directory, give versions aliases, ``resolve``
``NAME[:VERSION|@ALIAS]`` back to a verified local model directory.

    from bigmodel.registry import Registry, resolve
    reg = Registry("~/.bigmodel/registry")
    reg.register("runs/iris", "iris")          # -> {"version": 1, ...}
    reg.alias("iris", 1, "production")
    resolve("iris@production")                 # -> Path to a checked model directory
"""

from __future__ import annotations

import os
from pathlib import Path

from bigmodel.registry.refs import DEFAULT_ALIAS, Ref, parse_ref
from bigmodel.registry.store import Registry, default_location

__all__ = ["DEFAULT_ALIAS", "Ref", "Registry", "default_location", "model_dir", "parse_ref", "resolve"]


def resolve(ref: str, registry: str | os.PathLike[str] | None = None) -> Path:
    """``NAME[:VERSION|@ALIAS]`` -> a local model directory whose bytes were checked against the
    registry's hashes (for explain, online learning, predict and any stage that takes a model)."""
    return Registry(registry, create=False).resolve(ref)


def model_dir(ref: str | os.PathLike[str], registry: str | os.PathLike[str] | None = None) -> Path:
    """What a command's MODEL argument names: a model directory, or a registry reference
    ``NAME[:VERSION|@ALIAS]`` (in ``registry``, default ``$BIGMODEL_REGISTRY``), checked."""
    from bigmodel.errors import BigModelError

    path = Path(ref)
    if path.is_dir():
        return path
    text = str(ref)
    if "/" in text or "\\" in text or text.startswith("."):
        raise BigModelError(f"model not found: {ref} is not a model directory")
    return resolve(text, registry)
