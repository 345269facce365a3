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

__all__ = ["DEFAULT_ALIAS", "Ref", "Registry", "default_location", "parse_ref", "resolve"]


def resolve(ref: str, registry: str | os.PathLike[str] | None = None) -> Path:
    """``NAME[:VERSION|@ALIAS]`` -> a local model directory whose bytes were checked against the
    registry's hashes (for explain, online learning, predict and any stage that takes a model)."""
    return Registry(registry, create=False).resolve(ref)
