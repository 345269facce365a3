"""Labelled rows in: a JSON body's row objects, or a CSV / JSON-lines stream from a file or stdin.

One shape everywhere: a row is an object of the model's feature columns and its label column
(``model.json`` ``label``, e.g. ``{"f0": 1.2, ..., "target": "setosa"}``), the same as a line of a
JSON-lines stream or a CSV row. Checks name the field: a missing feature, a non-number, NaN, an
unknown class (``bigmodel.rows``).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from bigmodel.artifacts import ModelMeta
from bigmodel.errors import BigModelError
from bigmodel.rows import features_from_table, label_name, labels_from_column, table_from_rows

CHUNK_ROWS = 1024  # rows read, checked and learned at a time: memory stays bounded on any stream


def labelled(
    table: pa.Table, meta: ModelMeta, source: str, first_row: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, F) float32, y (N,)) from a table holding the feature and label columns (its rows are
    rows ``first_row``... of the stream, for error messages)."""
    x = features_from_table(table, meta, source, first_row)
    name = label_name(meta)
    if name not in table.column_names:
        raise BigModelError(f"{source}: missing label column '{name}'")
    return x, labels_from_column(table.column(name), meta, source, first_row)


def _open(stream: str | Path | IO[bytes]) -> tuple[IO[bytes] | pa.NativeFile, str]:
    if not isinstance(stream, str | Path):
        return stream, "stream"
    if str(stream) == "-":
        return sys.stdin.buffer, "stdin"
    path = Path(stream)
    if not path.is_file():
        raise BigModelError(f"stream file not found: {path}")
    # Opened natively, for the reason data.source._open_file gives: Arrow's read-ahead thread must
    # never call back into Python, or bad input stopping the CLI mid-read aborts at exit.
    return pa.OSFile(str(path)), str(path)


def _is_json_lines(f: IO[bytes] | pa.NativeFile, source: str) -> bool:
    if source.lower().endswith((".jsonl", ".ndjson", ".json")):
        return True
    if source.lower().endswith(".csv"):
        return False
    if isinstance(f, pa.NativeFile):  # a local file: read the first bytes, then rewind
        head = f.read(64)
        f.seek(0)
    else:
        head = f.peek(64) if hasattr(f, "peek") else b""  # stdin: look at the first byte
    return head.lstrip()[:1] == b"{"


def read_stream(
    stream: str | Path | IO[bytes], meta: ModelMeta, *, chunk_rows: int = CHUNK_ROWS
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Labelled rows from a CSV or JSON-lines file, ``-`` (stdin) or a binary file object, as
    checked (x, y) chunks of at most ``chunk_rows`` rows; only one chunk is in memory at a time."""
    f, source = _open(stream)
    try:
        if _is_json_lines(f, source):
            yield from _json_lines(f, meta, source, chunk_rows)
        else:
            yield from _csv(f, meta, source, chunk_rows)
    finally:
        if isinstance(f, pa.NativeFile):  # opened here (not stdin, not the caller's file object)
            f.close()


def _json_lines(
    f: IO[bytes] | pa.NativeFile, meta: ModelMeta, source: str, chunk_rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    rows: list[Any] = []
    done = 0  # rows in the chunks before this one
    lineno = 1
    lines = iter(io.TextIOWrapper(f, encoding="utf-8", errors="strict"))
    while True:
        try:
            line = next(lines)
        except StopIteration:
            break
        except UnicodeDecodeError:
            raise BigModelError(f"{source}: not UTF-8 text (at or after line {lineno})") from None
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise BigModelError(f"{source} line {lineno}: not valid JSON ({err.msg})") from None
            if len(rows) == chunk_rows:
                yield _chunk(rows, meta, source, done)
                done += len(rows)
                rows = []
        lineno += 1
    if rows:
        yield _chunk(rows, meta, source, done)


def _chunk(rows: list[Any], meta: ModelMeta, source: str, done: int) -> tuple[np.ndarray, np.ndarray]:
    """Checked (x, y) of one chunk; errors number rows in the stream from 0, as for a CSV (a parse
    error names the file line instead)."""
    table = table_from_rows(rows, meta, source, labels=True, row_name=lambda i: f"row {done + i}")
    return labelled(table, meta, source, done)


def _csv(
    f: IO[bytes] | pa.NativeFile, meta: ModelMeta, source: str, chunk_rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    try:
        reader = pcsv.open_csv(f, read_options=pcsv.ReadOptions(block_size=1 << 20, use_threads=False))
        try:
            row = 0
            for batch in reader:
                for start in range(0, batch.num_rows, chunk_rows):
                    chunk = pa.Table.from_batches([batch.slice(start, chunk_rows)])
                    yield labelled(chunk, meta, source, row)
                    row += chunk.num_rows
        finally:
            reader.close()  # stop the read-ahead now, not at interpreter exit
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as err:
        raise BigModelError(f"cannot read {source}: {str(err).splitlines()[0]}") from None
