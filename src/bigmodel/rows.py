"""Rows checked against a model's schema (``model.json``: feature columns, label column and classes).

User input (a JSON body's row objects, a CSV or Parquet table, a stream) becomes the model's
(N, F) float32 features and label codes here, with one-line errors that name the row and the
column. Explanations and online learning (on the command line and in the server) share these
checks, so they sit beside the model-directory contract rather than inside either stage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bigmodel.artifacts import ModelMeta
from bigmodel.data.source import checked_features
from bigmodel.errors import BigModelError


def label_name(meta: ModelMeta) -> str:
    """The label column's name (``label`` when model.json names none)."""
    return meta.label or "label"


def table_from_rows(
    rows: Any, meta: ModelMeta, source: str, *, labels: bool, row_name: Callable[[int], str] | None = None
) -> pa.Table:
    """A list of row objects -> an Arrow table of the model's columns; errors name the row (``rows[i]``,
    or ``row_name(i)``, e.g. a line of a file) and the key."""
    at = row_name or (lambda i: f"rows[{i}]")
    if not isinstance(rows, list) or not rows:
        raise BigModelError(f"{source}: 'rows' must be a non-empty list of objects")
    names = [*meta.features, label_name(meta)] if labels else list(meta.features)
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise BigModelError(f"{source}: {at(i)} must be an object of feature names to values")
        for name in names:
            if name not in r:
                what = "label" if labels and name == names[-1] else "feature"
                raise BigModelError(f"{source}: {at(i)} has no {what} '{name}'")
    cols = {}
    for name in names:
        values = [r[name] for r in rows]
        is_label = labels and name == names[-1]
        ok = _is_label_value if is_label else _is_number
        bad = next((i for i, v in enumerate(values) if not ok(v)), None)
        if bad is not None:
            what = (
                f"label '{name}' must be a class name or a number"
                if is_label
                else f"feature '{name}' must be a number"
            )
            raise BigModelError(f"{source}: {at(bad)} {what}, got {values[bad]!r:.40}")
        try:
            cols[name] = pa.array(values) if is_label else pa.array(values, type=pa.float64())
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            what = "label" if is_label else "feature"
            raise BigModelError(f"{source}: {what} '{name}' mixes numbers and text across rows") from None
    return pa.table(cols)


def _is_number(v: Any) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool))  # None: named later


def _is_label_value(v: Any) -> bool:
    return v is None or isinstance(v, str) or _is_number(v)


def features_from_table(table: pa.Table, meta: ModelMeta, source: str, first_row: int = 0) -> np.ndarray:
    """The model's feature columns, in the model's order, as (N, F) float32; other columns are
    ignored. A missing column, a non-numeric one, a missing value or NaN -> error naming it (rows
    are numbered from ``first_row``: the table may be one chunk of a longer stream)."""
    if table.num_rows == 0:
        raise BigModelError(f"{source} is empty: no rows")
    missing = [f for f in meta.features if f not in table.column_names]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise BigModelError(
            f"{source}: missing feature column '{missing[0]}'{more}; the model needs {len(meta.features)} columns"
        )
    batch = table.select(meta.features).combine_chunks().to_batches()[0]
    return checked_features(batch, meta.features, source, first_row)


def labels_from_column(values: Any, meta: ModelMeta, source: str, first_row: int = 0) -> np.ndarray:
    """True labels as the model's codes (classification) or float targets (regression); an
    unknown class, a missing value or a non-number target -> error naming the label column."""
    name = label_name(meta)
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
            f"(row {first_row + i}; classes: {', '.join(known)})"
        )
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64)
