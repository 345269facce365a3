"""``bigmodel data prepare``: a CSV or Parquet file or folder (local or any fsspec URL) becomes a
prepared dataset: Parquet shards per split plus a manifest with statistics and a content hash."""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from bigmodel.data.manifest import Manifest, Task
from bigmodel.data.shards import ShardWriter
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_dir

_PARQUET = (".parquet", ".pq")
_CSV = (".csv", ".csv.gz", ".tsv")
_BATCH_ROWS = 65536


def open_source(src: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """A local path or fsspec URL that must exist -> (file system, path)."""
    try:
        fs, path = fsspec.core.url_to_fs(src)
    except (ValueError, ImportError) as err:
        raise BigModelError(f"cannot open {src}: {err}") from None
    if not fs.exists(path):
        raise BigModelError(f"source not found: {src}")
    return fs, path


def _list_files(src: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    fs, path = open_source(src)
    if fs.isdir(path):
        files = sorted(f for f in fs.find(path) if f.lower().endswith(_PARQUET + _CSV))
        if not files:
            raise BigModelError(f"no .csv or .parquet files in {src}")
    else:
        if not path.lower().endswith(_PARQUET + _CSV):
            raise BigModelError(f"{src}: expected a .csv or .parquet file")
        files = [path]
    return fs, files


def _open_file(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    """A local file opened natively by Arrow, any other through fsspec. Arrow's read-ahead thread then
    never calls back into Python for a local file: one still reading a Python file object when bad
    input stops the CLI is killed at interpreter exit mid-call ("terminate called without an active
    exception", an abort instead of exit 2)."""
    if isinstance(fs, LocalFileSystem):
        return pa.OSFile(path)
    return fs.open(path, "rb")


def _batches(
    fs: fsspec.AbstractFileSystem, path: str, columns: list[str] | None = None
) -> Generator[pa.RecordBatch, None, None]:
    """Stream one file as record batches in bounded memory."""
    try:
        with _open_file(fs, path) as f:
            if path.lower().endswith(_PARQUET):
                pf = pq.ParquetFile(f)
                # One row group per call: over a whole file, pyarrow's pre-buffering keeps every
                # column chunk it fetched until the file is done (the whole file in memory), and
                # without it a remote file is read one column chunk per request.
                for i in range(pf.num_row_groups):
                    yield from pf.iter_batches(batch_size=_BATCH_ROWS, row_groups=[i], columns=columns)
            else:
                delim = "\t" if path.lower().endswith(".tsv") else ","
                compression = "gzip" if path.lower().endswith(".gz") else None
                stream = pa.CompressedInputStream(f, compression) if compression else f
                # use_threads=False: with Arrow's parser threads, a CLI that stopped on bad input
                # aborted at exit ("terminate called without an active exception") in ~5% of runs;
                # the streaming reader parses no faster with them (1.2-1.4 s for 230 MB either way).
                reader = pcsv.open_csv(
                    stream,
                    read_options=pcsv.ReadOptions(block_size=16 << 20, use_threads=False),
                    parse_options=pcsv.ParseOptions(delimiter=delim),
                    convert_options=pcsv.ConvertOptions(include_columns=columns),
                )
                try:
                    yield from reader
                finally:
                    # Stop Arrow's read-ahead threads now: left to interpreter exit they can abort it.
                    reader.close()
    except (pa.ArrowException, OSError) as err:  # e.g. ArrowKeyError: a file lacks the label column
        raise BigModelError(f"cannot read {path}: {str(err).splitlines()[0]}") from None


def _schema(fs: fsspec.AbstractFileSystem, path: str) -> pa.Schema:
    with contextlib.closing(_batches(fs, path)) as batches:
        for batch in batches:
            return batch.schema
    raise BigModelError(f"{path} is empty: no rows")


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _label_values(fs: fsspec.AbstractFileSystem, files: list[str], label: str) -> list[Any]:
    """First pass, label column only: the sorted distinct labels."""
    seen: set[Any] = set()
    for path in files:
        for batch in _batches(fs, path, columns=[label]):
            col = batch.column(0)
            if col.null_count:
                raise BigModelError(f"{path}: label column '{label}' has missing values")
            seen.update(pc.unique(col).to_pylist())
            if len(seen) > 10000:
                raise BigModelError(
                    f"label column '{label}' has over 10000 distinct values; use --task regression"
                )
    return sorted(seen, key=lambda v: (str(type(v)), v))


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
    fs, files = _list_files(src)
    schema = _schema(fs, files[0])
    if label not in schema.names:
        raise BigModelError(
            f"label column '{label}' not found in {files[0]} (columns: {', '.join(schema.names)}); "
            "pass --label COL"
        )
    features = [c for c in schema.names if c != label]
    if not features:
        raise BigModelError(f"{files[0]} has no feature columns besides the label '{label}'")
    label_type = schema.field(label).type
    if task is None:
        task = "regression" if pa.types.is_floating(label_type) else "multiclass"
    values: list[Any] | None = None
    if task == "regression":
        if not _is_numeric(label_type):
            raise BigModelError(f"--task regression needs a numeric label column; '{label}' is {label_type}")
    else:
        values = _label_values(fs, files, label)
        if len(values) < 2:
            raise BigModelError(f"label column '{label}' has a single value {values}: nothing to learn")
        if task == "binary" and len(values) != 2:
            raise BigModelError(f"--task binary needs 2 distinct labels in '{label}', found {len(values)}")
        if len(values) == 2:
            task = "binary"

    from bigmodel.console import progress_bar  # local: keeps data free of console at import

    source_rows, source_bytes = _source_size(fs, files, len(features))
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
            rows = _write_source(writer, fs, files, schema.names, label, values, source_rows, progress)
            with progress_bar("shuffling", total=rows, enabled=progress and shuffle) as advance:
                manifest = writer.close(advance)
    except OSError as err:  # e.g. the disk filled up; atomic_dir has removed the half-written folder
        raise BigModelError(f"cannot write {dst}: {err}") from None
    return manifest


def _write_source(
    writer: ShardWriter,
    fs: fsspec.AbstractFileSystem,
    files: list[str],
    columns: list[str],
    label: str,
    values: list[Any] | None,
    total: int | None,
    progress: bool,
) -> int:
    """Pass every row of the source through its checks into ``writer``; returns the row count."""
    from bigmodel.console import progress_bar

    features = [c for c in columns if c != label]
    value_set = pa.array(values) if values is not None else None
    row = 0
    with progress_bar("reading", total=total, enabled=progress) as advance:
        for path in files:
            for batch in _batches(fs, path):
                if batch.schema.names != columns:
                    raise BigModelError(
                        f"{path}: columns {batch.schema.names} differ from {files[0]}'s {columns}"
                    )
                x = _features(batch, features, path, row)
                y = _labels(batch.column(label), value_set, path, label)
                writer.write(x, y)
                row += batch.num_rows
                advance(batch.num_rows)
    return row


def _source_size(fs: fsspec.AbstractFileSystem, files: list[str], features: int) -> tuple[int | None, int]:
    """(rows, bytes as float32 features and an int64 label) of the source: exact for Parquet, whose
    footers count the rows (None when a file is CSV), and an over-estimate from the file sizes for
    CSV (a number takes at least 2 characters, and gzip shrinks text up to ~10x). Sizes the shuffle's
    buckets; a bucket that comes out too big is split again, so a wrong guess costs time, not memory."""
    rows: int | None = 0
    size = 0
    row_bytes = 4 * features + 8
    for path in files:
        if path.lower().endswith(_PARQUET):
            try:
                with _open_file(fs, path) as f:
                    n = pq.ParquetFile(f).metadata.num_rows
            except (pa.ArrowException, OSError) as err:
                raise BigModelError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
            rows = None if rows is None else rows + n
            size += n * row_bytes
        else:
            rows = None
            size += (fs.size(path) or 0) * (10 if path.lower().endswith(".gz") else 2)  # None: unknown
    return rows, size


def _features(batch: pa.RecordBatch, features: list[str], path: str, first_row: int) -> np.ndarray:
    x = np.empty((batch.num_rows, len(features)), dtype=np.float32, order="F")
    for j, name in enumerate(features):
        col = batch.column(name)
        if not _is_numeric(col.type):
            raise BigModelError(f"{path}: feature column '{name}' is not numeric ({col.type})")
        if col.null_count:
            bad = first_row + int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise BigModelError(f"{path}: feature column '{name}' has a missing value (row {bad})")
        x[:, j] = col.to_numpy(zero_copy_only=False)
    finite = np.isfinite(x)
    if not finite.all():
        j = int(np.flatnonzero(~finite.all(axis=0))[0])
        i = first_row + int(np.flatnonzero(~finite[:, j])[0])
        raise BigModelError(f"{path}: feature column '{features[j]}' has a NaN or infinite value (row {i})")
    return np.ascontiguousarray(x)


def _labels(col: pa.Array, value_set: pa.Array | None, path: str, label: str) -> np.ndarray:
    if col.null_count:
        raise BigModelError(f"{path}: label column '{label}' has missing values")
    if value_set is None:  # regression
        y = col.to_numpy(zero_copy_only=False).astype(np.float32)
        if not np.isfinite(y).all():
            raise BigModelError(f"{path}: label column '{label}' has a NaN or infinite value")
        return y
    return (
        pc.index_in(col, value_set=value_set.cast(col.type)).to_numpy(zero_copy_only=False).astype(np.int64)
    )
