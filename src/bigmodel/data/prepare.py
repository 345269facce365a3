"""``bigmodel data prepare``: a CSV or Parquet file or folder (local or any fsspec URL) becomes a
prepared dataset: Parquet shards per split plus a manifest with statistics and a content hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa

from bigmodel.data import source
from bigmodel.data.manifest import Manifest, Task
from bigmodel.data.shards import ShardWriter, check_seed
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_dir


def prepare(
    src: str,
    dst: str | Path,
    *,
    label: str = "label",
    val_fraction: float = 0.2,
    seed: int = 0,
    task: Task | None = None,
    name: str | None = None,
    context: int = 256,
    shuffle: bool = True,
    progress: bool = False,
) -> Manifest:
    """Turn a CSV/Parquet file or folder into a prepared dataset at ``dst`` (which must not exist).

    Features must be numeric and finite; classification labels become codes 0..K-1 with the
    original values kept in the manifest. Written under a temporary name and renamed when complete.
    The rows are shuffled once (by ``seed``, in bounded memory), so that a source sorted by label or
    time trains as well as a shuffled one; ``shuffle=False`` keeps the source's order.
    With ``task="lm"`` the source is text (any files) and becomes byte rows of ``context + 1``.
    """
    if task == "lm":
        from bigmodel.data.text import prepare_text

        return prepare_text(
            src, dst, context=context, val_fraction=val_fraction, seed=seed, name=name, shuffle=shuffle
        )
    dst = Path(dst)
    if dst.exists():
        raise BigModelError(
            f"destination already exists: {dst} (choose a new folder; nothing was overwritten)"
        )
    check_seed(seed)
    fs, files = source.list_files(src)
    first, schema = source.first_schema(fs, files, src)
    if label not in schema.names:
        raise BigModelError(
            f"label column '{label}' not found in {first} (columns: {', '.join(schema.names)}); "
            "pass --label COL"
        )
    features = [c for c in schema.names if c != label]
    if not features:
        raise BigModelError(f"{first} has no feature columns besides the label '{label}'")
    label_type = schema.field(label).type
    values: list[Any] | None = None
    if task is None and pa.types.is_floating(label_type):
        task = "regression"
    if task == "regression":
        if not source.is_numeric(label_type):
            raise BigModelError(f"--task regression needs a numeric label column; '{label}' is {label_type}")
    else:
        values, label_rows = source.label_values(fs, files, label, (first, label_type))
        if task is None:
            task = infer_task(label_type, values, label_rows)
            if task == "regression":
                values = None
    assert task is not None
    if values is not None:
        if len(values) < 2:
            raise BigModelError(f"label column '{label}' has a single value {values}: nothing to learn")
        if task == "binary" and len(values) != 2:
            raise BigModelError(f"--task binary needs 2 distinct labels in '{label}', found {len(values)}")
        if len(values) == 2:
            task = "binary"

    from bigmodel.console import progress_bar  # local: keeps data free of console at import

    source_rows, source_bytes = source.size(fs, files, len(features))
    try:
        with (
            atomic_dir(dst) as tmp,
            ShardWriter(
                tmp,
                name=name or Path(str(src).rstrip("/")).name,
                source=str(src),
                task=task,
                features=features,
                label=label,
                label_values=values,
                seed=seed,
                val_fraction=val_fraction,
                shuffle_bytes=source_bytes if shuffle else None,
            ) as writer,
        ):
            rows = _write_source(writer, fs, files, schema, label, values, source_rows, progress)
            with progress_bar("shuffling", total=rows, enabled=progress and shuffle) as advance:
                manifest = writer.close(advance)
    except OSError as err:  # e.g. the disk filled up; atomic_dir has removed the half-written folder
        raise BigModelError(f"cannot write {dst}: {err}") from None
    return manifest


# An integer label with more distinct values than this, that are also more than this share of the
# rows, is a count or a score (diabetes progression: 214 values in 442 rows), not a class.
MAX_CLASSES_GUESSED = 20
MAX_CLASS_SHARE = 0.05


def infer_task(label_type: pa.DataType, values: list[Any], rows: int) -> Task:
    """The task a label column means when ``--task`` is not given: floats are regression; strings
    and booleans are classes; integers are classes unless they look like a quantity (many
    distinct values, each seen a few times), as AutoML tools (AutoGluon, H2O) guess it too."""
    if pa.types.is_floating(label_type):
        return "regression"
    many = len(values) > MAX_CLASSES_GUESSED and len(values) > MAX_CLASS_SHARE * rows
    if pa.types.is_integer(label_type) and many:
        return "regression"
    return "binary" if len(values) == 2 else "multiclass"


def _write_source(
    writer: ShardWriter,
    fs: fsspec.AbstractFileSystem,
    files: list[str],
    schema: pa.Schema,
    label: str,
    values: list[Any] | None,
    total: int | None,
    progress: bool,
) -> int:
    """Pass every row of the source through its checks into ``writer``; returns the row count."""
    from bigmodel.console import progress_bar

    columns = schema.names
    features = [c for c in columns if c != label]
    value_set = source.value_set(values, schema.field(label).type, label) if values is not None else None
    rows = 0
    with progress_bar("reading", total=total, enabled=progress) as advance:
        for path in files:
            row = 0  # messages name the row within its file
            for batch in source.batches(fs, path):
                if batch.schema.names != columns:
                    raise BigModelError(f"{path}: columns {batch.schema.names} differ from {columns}")
                x = source.checked_features(batch, features, path, row)
                y = source.checked_labels(batch.column(label), value_set, path, label)
                writer.write(x, y)
                row += batch.num_rows
                advance(batch.num_rows)
            rows += row
    return rows
