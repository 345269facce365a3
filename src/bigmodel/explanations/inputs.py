"""User input for explanations: a model reference and a table file (the rows in it are checked
against the model's schema by ``bigmodel.rows``)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv

from bigmodel.artifacts import LoadedModel, load_model
from bigmodel.errors import BigModelError


def resolve_model(ref: str | Path, registry: str | None = None) -> LoadedModel:
    """A model directory, or a registry reference ``NAME``, ``NAME@ALIAS``, ``NAME:VERSION`` (in
    ``registry``, default ``$BIGMODEL_REGISTRY``) -> the loaded, hash-verified model."""
    from bigmodel.registry import model_dir

    return load_model(model_dir(ref, registry))


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
