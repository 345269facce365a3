"""``bigmodel data prepare``: a CSV or Parquet file or folder (local or any fsspec URL) becomes a
prepared dataset: Parquet shards per split plus a manifest with statistics and a content hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa

from bigmodel.data import delta, remote, source
from bigmodel.data.manifest import Manifest, Task
from bigmodel.data.shards import ShardWriter, check_seed
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_dir
from bigmodel.stop import check as check_stop


def prepare(
    src: Any,
    dst: str | Path,
    *,
    label: str = "label",
    val_fraction: float = 0.2,
    seed: int = 0,
    task: Task | None = None,
    name: str | None = None,
    context: int = 256,
    shuffle: bool = True,
    drop: list[str] | None = None,
    progress: bool = False,
    engine: str = "local",
    master: str = "local[2]",
    spark_conf: dict[str, str] | None = None,
) -> Manifest:
    """Turn a CSV/Parquet file or folder into a prepared dataset at ``dst`` (which must not exist).

    Features must be numeric and finite; classification labels become codes 0..K-1 with the
    original values kept in the manifest. Written under a temporary name and renamed when complete.
    The rows are shuffled once (by ``seed``, in bounded memory), so that a source sorted by label or
    time trains as well as a shuffled one; ``shuffle=False`` keeps the source's order.
    ``drop``: columns left out (IDs, dates, free text: whatever is not a feature).
    With ``task="lm"`` the source is text (any files) and becomes byte rows of ``context + 1``.
    ``engine="spark"`` (or ``src`` a pyspark DataFrame) runs it on Spark (``master``, ``spark_conf``)
    with the same result; see ``bigmodel.data.spark_engine``.
    """
    from bigmodel.data.spark_engine import is_spark_dataframe  # imports no pyspark

    drop = list(drop or [])
    if drop and task == "lm":
        raise BigModelError("--drop leaves out table columns; text (--task lm) has none")
    if label in drop:
        raise BigModelError(f"--drop {label}: that is the label column; pass another --label")
    if engine == "spark" or is_spark_dataframe(src):
        from bigmodel.data.spark_engine import prepare_spark

        return prepare_spark(
            src,
            dst,
            label=label,
            val_fraction=val_fraction,
            seed=seed,
            task=task,
            name=name,
            context=context,
            shuffle=shuffle,
            drop=drop,
            master=master,
            conf=spark_conf,
            infer_task=infer_task,
            progress=progress,
        )
    if engine != "local":
        raise BigModelError(f"--engine must be local or spark, got {engine!r}")
    if remote.is_url(str(dst)):
        return _prepare_remote(
            src,
            str(dst),
            label=label,
            val_fraction=val_fraction,
            seed=seed,
            task=task,
            name=name,
            context=context,
            shuffle=shuffle,
            drop=drop,
            progress=progress,
        )
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
    snap = delta.snapshot(src) if delta.is_delta(src) else None
    if snap is not None:
        fs = fsspec.core.url_to_fs(snap.path)[0]
        files = [fsspec.core.url_to_fs(f)[1] for f in snap.files]  # paths on fs, as list_files gives
        if not files:
            raise BigModelError(f"{snap.uri} is empty: no data files")
        partitions = {
            p: snap.partitions[uri] for p, uri in zip(files, snap.files, strict=True) if snap.partitions
        }
    else:
        fs, files = source.list_files(src)
        partitions = {}
    first, schema = source.first_schema(fs, files, src)
    if partitions:
        schema = snap.with_partition_fields(schema)  # type: ignore[union-attr]
    if label not in schema.names:
        raise BigModelError(
            f"label column '{label}' not found in {first} (columns: {', '.join(schema.names)}); "
            "pass --label COL"
        )
    source.check_drop(drop, schema.names, snap.uri if snap else first)
    features = [c for c in schema.names if c != label and c not in drop]
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
        if partitions and label in partitions[files[0]]:  # the label's values are in the log
            values = _partition_labels(partitions, label)
            label_rows = source.size(fs, files, len(features))[0] or 0
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
                name=name or Path((snap.path if snap else str(src)).rstrip("/")).name,
                source=snap.uri if snap else str(src),
                task=task,
                features=features,
                label=label,
                label_values=values,
                seed=seed,
                val_fraction=val_fraction,
                shuffle_bytes=source_bytes if shuffle else None,
            ) as writer,
        ):
            if snap is not None:  # the table version read, so the run can be reproduced
                writer.meta["source_version"] = snap.version
            rows = _write_source(
                writer, fs, files, schema, features, label, values, source_rows, progress, partitions
            )
            with progress_bar("shuffling", total=rows, enabled=progress and shuffle) as advance:
                manifest = writer.close(advance)
    except OSError as err:  # e.g. the disk filled up; atomic_dir has removed the half-written folder
        raise BigModelError(f"cannot write {dst}: {err}") from None
    return manifest


def _prepare_remote(src: str, dst: str, **kwargs: Any) -> Manifest:
    """Prepare into a local temporary folder (the shuffle needs local disk anyway), then upload it
    to ``dst`` with ``manifest.json`` last: object stores have no rename, so the manifest is the
    commit marker (see ``bigmodel.data.remote``)."""
    import shutil
    import tempfile

    remote.check_absent(dst)
    tmp = Path(tempfile.mkdtemp(prefix="bigmodel-prepare-"))
    try:
        manifest = prepare(src, tmp / "dataset", **kwargs)
        remote.upload(tmp / "dataset", manifest, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _partition_labels(partitions: dict[str, dict[str, Any]], label: str) -> list[Any]:
    """The distinct values of a partition column that is the label, sorted as ``label_values`` sorts."""
    values = {p[label] for p in partitions.values()}
    if None in values:
        raise BigModelError(f"label column '{label}' has missing values")
    return sorted(values, key=lambda v: (str(type(v)), v))


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
    features: list[str],
    label: str,
    values: list[Any] | None,
    total: int | None,
    progress: bool,
    partitions: dict[str, dict[str, Any]],
) -> int:
    """Pass every row of the source through its checks into ``writer``; returns the row count.
    ``partitions``: a partitioned Delta table's values per file, added as constant columns."""
    from bigmodel.console import progress_bar

    columns = schema.names
    value_set = source.value_set(values, schema.field(label).type, label) if values is not None else None
    rows = 0
    with progress_bar("reading", total=total, enabled=progress) as advance:
        for path in files:
            row = 0  # messages name the row within its file
            for batch in source.batches(fs, path):
                check_stop()
                if partitions:
                    batch = delta.with_partition_values(batch, partitions[path], schema)
                if batch.schema.names != columns:
                    raise BigModelError(f"{path}: columns {batch.schema.names} differ from {columns}")
                x = source.checked_features(batch, features, path, row)
                y = source.checked_labels(batch.column(label), value_set, path, label)
                writer.write(x, y)
                row += batch.num_rows
                advance(batch.num_rows)
            rows += row
    return rows
