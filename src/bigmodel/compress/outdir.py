"""Where a compressed model goes: a new model directory beside its source, never over anything.

Every compress verb reads a source it leaves untouched (hashes checked first), builds the result in
a temporary directory and renames it into place only when it is complete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from bigmodel import artifacts
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_dir
from bigmodel.models.layers import Int8Linear


def open_source(path: str | Path) -> artifacts.LoadedModel:
    """Load a source model directory, refusing a missing one or one whose files changed."""
    return artifacts.load_model(path)


def destination(src: str | Path, out: str | Path | None, suffix: str) -> Path:
    """``out``, or ``<src>-<suffix>`` beside the source; refused if it exists."""
    dst = Path(out) if out else Path(str(Path(src)).rstrip("/") + f"-{suffix}")
    if dst.exists():
        raise BigModelError(f"output {dst} already exists; choose another --out (nothing was overwritten)")
    return dst


@contextlib.contextmanager
def building(dst: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``dst`` if the block succeeds."""
    try:
        with atomic_dir(dst) as tmp:
            yield tmp
    except FileExistsError:
        raise BigModelError(
            f"output {dst} already exists; choose another --out (nothing was overwritten)"
        ) from None


def derived_meta(
    src: artifacts.LoadedModel,
    *,
    architecture: dict[str, Any],
    method: str,
    params: dict[str, Any],
    metrics: dict[str, float] | None = None,
) -> artifacts.ModelMeta:
    """The source's model.json with a new architecture, metrics and lineage (parent path + digest)."""
    meta = src.meta.model_copy(deep=True)
    meta.architecture = architecture
    meta.metrics = dict(metrics or {})
    meta.files = {}
    meta.created_at = ""
    for key in ("onnx",):  # the source's ONNX file is not copied: it describes the old weights
        if key in (meta.model_extra or {}):
            del meta.model_extra[key]  # type: ignore[union-attr]
    meta.lineage = artifacts.Lineage(
        method=method,
        parent={"path": str(src.path.resolve()), "digest": artifacts.digest(src.path)},
        params=params,
        data_manifest_hash=src.meta.lineage.data_manifest_hash,
    )
    return meta


def check_layers(model: nn.Module, method: str, allowed: tuple[type[nn.Module], ...]) -> None:
    """Refuse a model with a layer the method cannot handle, naming the layer."""
    for name, m in model.named_modules():
        if isinstance(m, Int8Linear):
            raise BigModelError(f"layer '{name}' is already int8 (Int8Linear): {method} needs float layers")
        if len(list(m.children())) == 0 and not isinstance(m, allowed):
            raise BigModelError(f"layer '{name}' ({type(m).__name__}) cannot be handled by {method}")
