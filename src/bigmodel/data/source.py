"""Reading a user's source for ``data prepare``: CSV or Parquet files (local or any fsspec URL),
streamed as record batches in bounded memory, with the checks that name a bad file, column or row."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Generator, Iterator
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from bigmodel.data.manifest import MANIFEST
from bigmodel.errors import BigModelError

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


def list_files(src: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The data files of a source file or folder. In a folder, paths with a part that starts with "."
    or "_" are skipped, as pyarrow.dataset, Spark and Hive skip them (_SUCCESS, .crc, _temporary,
    and our own half-written .DST.*.tmp folders), and so are prepared datasets inside it."""
    fs, path = open_source(src)
    if fs.isdir(path):
        root = path.rstrip("/")
        if fs.exists(f"{root}/{MANIFEST}"):
            raise BigModelError(
                f"{src} is a prepared dataset already; train on it directly (--dataset {src})"
            )
        found = fs.find(root)
        datasets = {f.rsplit("/", 1)[0] for f in found if f.rsplit("/", 1)[-1] == MANIFEST}
        files = []
        for f in sorted(found):
            parts = f[len(root) + 1 :].split("/")
            folders = {"/".join([root, *parts[:i]]) for i in range(1, len(parts))}
            if (
                f.lower().endswith(_PARQUET + _CSV)
                and not any(p.startswith((".", "_")) for p in parts)
                and not folders & datasets
            ):
                files.append(f)
        if not files:
            raise BigModelError(
                f"no .csv or .parquet files in {src} (skipped: hidden or _-prefixed paths, prepared datasets)"
            )
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


_CSV_BLOCK = 16 << 20  # the CSV reader's block: its types are inferred from the first one


def batches(
    fs: fsspec.AbstractFileSystem, path: str, columns: list[str] | None = None, *, head: bool = False
) -> Generator[pa.RecordBatch, None, None]:
    """Stream one file as record batches in bounded memory. ``head``: a CSV file's first block only
    (Arrow's streaming reader reads ahead of what is asked, up to the whole file, so a schema
    taken from it would cost the file's size in memory)."""
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
                if head:
                    block = stream.read(_CSV_BLOCK)
                    if len(block) == _CSV_BLOCK and b"\n" in block:
                        block = block[: block.rindex(b"\n") + 1]  # whole lines only
                    yield from _parse_csv(block, delim, columns, None)
                else:
                    yield from _csv_blocks(stream, delim, columns)
    except (pa.ArrowException, OSError) as err:  # e.g. ArrowKeyError: a file lacks the label column
        raise BigModelError(f"cannot read {path}: {str(err).splitlines()[0]}") from None


def _csv_blocks(stream: Any, delim: str, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    """A CSV stream parsed one block of whole lines at a time, each with the header and the column
    types of the first block. Arrow's streaming reader would read ahead of its consumer up to the
    whole file (455 MiB held for a 475 MB file): memory would follow the largest file. A line
    never holds a newline inside quotes here, as Arrow's parser assumes by default too."""
    header: bytes | None = None
    types: dict[str, pa.DataType] | None = None
    rest = b""
    rows = 0  # data rows of the blocks before
    while True:
        block = stream.read(_CSV_BLOCK)
        data = rest + block
        if not block:  # the end: the last line, newline or not
            if header is None and not data:  # an empty file: Arrow's own error, as for the first block
                yield from _parse_csv(data, delim, columns, None)
            lines, rest = data, b""
        else:
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a block: read on
                rest = data
                continue
            lines, rest = data[:cut], data[cut:]
        if header is None:
            end = lines.find(b"\n") + 1 or len(lines)
            header, lines = lines[:end], lines[end:]
            if not header.endswith(b"\n"):
                header += b"\n"
        if lines.strip():
            before = rows  # Arrow numbers a bad row within what it parses: this block
            try:
                for batch in _parse_csv(header + lines, delim, columns, types):
                    types = types or dict(zip(batch.schema.names, batch.schema.types, strict=True))
                    rows += batch.num_rows
                    yield batch
            except pa.ArrowInvalid as err:
                renumbered = _renumbered(str(err), before)
                raise pa.ArrowInvalid(renumbered) from None
        if not block:
            return


def _renumbered(message: str, before: int) -> str:
    """Arrow's "Row #N" within one block as the row's number in the file."""
    return re.sub(r"Row #(\d+)", lambda m: f"Row #{int(m.group(1)) + before}", message)


def _parse_csv(
    data: bytes, delim: str, columns: list[str] | None, types: dict[str, pa.DataType] | None
) -> Iterator[pa.RecordBatch]:
    # use_threads=False: with Arrow's parser threads, a CLI that stopped on bad input aborted at
    # exit ("terminate called without an active exception") in ~5% of runs.
    reader = pcsv.open_csv(
        pa.BufferReader(data),
        read_options=pcsv.ReadOptions(block_size=_CSV_BLOCK + (1 << 20), use_threads=False),
        parse_options=pcsv.ParseOptions(delimiter=delim),
        # An empty cell is missing in a text column too (a blank label is no class), as Spark's CSV
        # reader has it: both engines refuse the same files.
        convert_options=pcsv.ConvertOptions(
            include_columns=columns, strings_can_be_null=True, column_types=types
        ),
    )
    try:
        yield from reader
    finally:
        reader.close()  # stop Arrow's read-ahead threads now: left to interpreter exit they can abort it


def first_schema(fs: fsspec.AbstractFileSystem, files: list[str], src: str) -> tuple[str, pa.Schema]:
    """(file, schema) of the first file with rows (Spark writes empty part files), with a categorical
    (dictionary) column given as its value type."""
    for path in files:
        with contextlib.closing(batches(fs, path, head=True)) as stream:
            for batch in stream:
                names = batch.schema.names
                twice = [n for n in names if names.count(n) > 1]
                if twice:
                    raise BigModelError(f"{path}: column '{twice[0]}' appears {names.count(twice[0])} times")
                return path, pa.schema([f.with_type(_value_type(f.type)) for f in batch.schema])
    raise BigModelError(f"{src} is empty: no rows" + (f" in {len(files)} files" if len(files) > 1 else ""))


def check_drop(drop: list[str], columns: list[str], where: str) -> None:
    """Every ``--drop`` column must exist: a typo would otherwise keep the column it meant to drop."""
    unknown = [c for c in drop if c not in columns]
    if unknown:
        raise BigModelError(f"--drop {unknown[0]}: no such column in {where} (columns: {', '.join(columns)})")


def _value_type(t: pa.DataType) -> pa.DataType:
    """A dictionary-encoded (categorical) column's value type; any other type as is."""
    return t.value_type if pa.types.is_dictionary(t) else t


def _decoded(col: pa.Array) -> pa.Array:
    return col.dictionary_decode() if pa.types.is_dictionary(col.type) else col


def _kind(t: pa.DataType) -> str:
    """Label types may differ between files (int32 here, int64 there), but not beyond their kind."""
    for kind, test in (
        ("integer", pa.types.is_integer),
        ("float", pa.types.is_floating),
        ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        ("boolean", pa.types.is_boolean),
    ):
        if test(t):
            return kind
    return str(t)


def is_numeric(t: pa.DataType) -> bool:
    """Integers, floats and booleans: what a feature column may hold."""
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def label_values(
    fs: fsspec.AbstractFileSystem, files: list[str], label: str, first: tuple[str, pa.DataType]
) -> tuple[list[Any], int]:
    """First pass, label column only: the sorted distinct labels and the number of rows. ``first``
    is the (file, type) the label's type comes from; every file's labels must be of its kind."""
    seen: set[Any] = set()
    rows = 0
    for path in files:
        for batch in batches(fs, path, columns=[label]):
            rows += batch.num_rows
            col = _decoded(batch.column(0))
            if _kind(col.type) != _kind(first[1]):
                raise BigModelError(
                    f"{path}: label column '{label}' is {col.type}, but {first[1]} in {first[0]}"
                )
            if col.null_count:
                raise BigModelError(f"{path}: label column '{label}' has missing values")
            if pa.types.is_floating(col.type) and pc.any(pc.is_nan(col)).as_py():
                raise BigModelError(f"{path}: label column '{label}' has a NaN value")
            seen.update(pc.unique(col).to_pylist())
            if len(seen) > 10000:
                raise BigModelError(
                    f"label column '{label}' has over 10000 distinct values; use --task regression"
                )
    return sorted(seen, key=lambda v: (str(type(v)), v)), rows


def value_set(values: list[Any], label_type: pa.DataType, label: str) -> pa.Array:
    """The distinct labels as one Arrow array: of the first file's type or, when another file's wider
    values do not fit it (int32 there, int64 here), of the type they all fit."""
    try:
        return pa.array(values, type=label_type)
    except (pa.ArrowException, OverflowError):
        try:
            return pa.array(values)
        except (pa.ArrowException, OverflowError) as err:
            raise BigModelError(f"label column '{label}': its values fit no one type ({err})") from None


def size(fs: fsspec.AbstractFileSystem, files: list[str], features: int) -> tuple[int | None, int]:
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


def checked_features(batch: pa.RecordBatch, features: list[str], path: str, first_row: int) -> np.ndarray:
    """The feature columns of ``batch`` as (n, F) float32, or a one-line error naming the file, column
    and row (``first_row``: the batch's first row within its file) of a non-number, gap, NaN or infinity."""
    x = np.empty((batch.num_rows, len(features)), dtype=np.float32, order="F")
    for j, name in enumerate(features):
        col = batch.column(name)
        if not is_numeric(col.type):
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


def checked_labels(col: pa.Array, value_set: pa.Array | None, path: str, label: str) -> np.ndarray:
    """The label column as class codes (int64, by ``value_set``) or regression targets (float32), or a
    one-line error for a missing or non-finite label."""
    col = _decoded(col)
    if col.null_count:
        raise BigModelError(f"{path}: label column '{label}' has missing values")
    if value_set is None:  # regression
        y = col.to_numpy(zero_copy_only=False).astype(np.float32)
        if not np.isfinite(y).all():
            raise BigModelError(f"{path}: label column '{label}' has a NaN or infinite value")
        return y
    # The file's labels are cast to the set's type (never the other way: int64 codes do not fit int32).
    codes = pc.index_in(col.cast(value_set.type), value_set=value_set)
    return codes.to_numpy(zero_copy_only=False).astype(np.int64)
