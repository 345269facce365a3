"""User input for explanations and feedback: a model reference, and rows checked against the model's
schema (feature columns, label values) with one-line errors that name the column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from bigmodel.artifacts import LoadedModel, ModelMeta, load_model
from bigmodel.data.prepare import _features as checked_features
from bigmodel.errors import BigModelError


def resolve_model(ref: str | Path) -> LoadedModel:
    """A model directory -> the loaded, hash-verified model.

    The hook for registry names: once the registry exists, a ``ref`` that is not a directory
    (``NAME``, ``NAME@alias``, ``NAME:version``) resolves through it here, and every verb that
    takes MODEL_DIR_OR_NAME gets it for free.
    """
    path = Path(ref)
    if path.is_dir():
        return load_model(path)
    raise BigModelError(f"model not found: {ref} is not a model directory")


def read_table(path: str | Path) -> pa.Table:
    """A CSV (or Parquet) file as an Arrow table, or a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise BigModelError(f"input file not found: {path}")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        return pcsv.read_csv(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as err:
        raise BigModelError(f"cannot read {path}: {str(err).splitlines()[0]}") from None


def features_from_table(table: pa.Table, meta: ModelMeta, source: str) -> np.ndarray:
    """The model's feature columns, in the model's order, as (N, F) float32; other columns are
    ignored. A missing column, a non-numeric one, a missing value or NaN -> error naming it."""
    if table.num_rows == 0:
        raise BigModelError(f"{source} is empty: no rows")
    missing = [f for f in meta.features if f not in table.column_names]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise BigModelError(
            f"{source}: missing feature column '{missing[0]}'{more}; the model needs {len(meta.features)} columns"
        )
    batch = table.select(meta.features).combine_chunks().to_batches()[0]
    return checked_features(batch, meta.features, source, 0)


def labels_from_column(values: Any, meta: ModelMeta, source: str) -> np.ndarray:
    """True labels as the model's codes (classification) or float targets (regression); an
    unknown class, a missing value or a non-number target -> error naming the label column."""
    name = meta.label or "label"
    col = pa.array(values) if not isinstance(values, pa.Array | pa.ChunkedArray) else values
    if col.null_count:
        raise BigModelError(f"{source}: label column '{name}' has a missing value")
    spec = meta.spec
    if spec.task == "regression":
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            raise BigModelError(
                f"{source}: label column '{name}' must be numeric for a regression model ({col.type})"
            )
        y = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float32)
        if not np.isfinite(y).all():
            raise BigModelError(f"{source}: label column '{name}' has a NaN or infinite value")
        return y
    known = [str(v) for v in (spec.label_values or range(spec.num_outputs))]
    text = pc.cast(col, pa.string())
    codes = pc.index_in(text, value_set=pa.array(known))
    if codes.null_count:
        i = int(np.flatnonzero(codes.is_null().to_numpy(zero_copy_only=False))[0])
        raise BigModelError(
            f"{source}: label column '{name}' has unknown class {text[i].as_py()!r} "
            f"(row {i}; classes: {', '.join(known)})"
        )
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64)
