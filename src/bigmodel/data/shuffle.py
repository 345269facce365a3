"""Shuffle a dataset's rows once, while it is prepared, in bounded memory.

The reader permutes row groups and shuffles rows only within windows of ~64k rows, so a big source
sorted by label or time would reach training nearly in that order: every batch of a label-sorted
source would hold one class. ``BucketShuffle`` is the classic two-pass external sort by a random key.
Each row comes with a 64-bit key, a hash of its bytes and the seed (``bigmodel.data.rowkey``): pass 1
sends each row to the one of K bucket files that holds its key's range; pass 2 reads the buckets
one at a time, sorts each by key in memory and hands its rows on. The rows come out in key order,
a random permutation that another engine (Spark) reproduces exactly, whatever the batching or K.
K comes from a guess at the data's size; a bucket that still comes out over twice ``BUCKET_BYTES``
is split the same way again on its own, so memory holds about one bucket whatever the guess.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from bigmodel.data.rowkey import bucket_of
from bigmodel.stop import check as check_stop

BUCKET_BYTES = 256 << 20  # pass 2 holds one bucket in memory
MAX_BUCKETS = 100  # files open at once per split (2 splits stay under macOS's default of 256)
_TAKE_ROWS = 65536
KEY = "__bigmodel_key__"  # the column that carries each row's key through the bucket files


def bucket_count(expected_bytes: int) -> int:
    """Buckets for about ``expected_bytes`` of rows (as float32/int64 columns in memory)."""
    return max(1, min(MAX_BUCKETS, math.ceil(expected_bytes / BUCKET_BYTES)))


class BucketShuffle:
    """Rows and their keys in with ``add`` (pass 1), out with ``drain`` (pass 2) in key order. The
    bucket files live in ``folder``, which ``drain`` (or ``abort``, on failure) removes."""

    def __init__(self, folder: Path, schema: pa.Schema, buckets: int):
        self.schema = schema.append(pa.field(KEY, pa.uint64(), nullable=False))
        self.folder = folder
        folder.mkdir(parents=True)
        self.paths = [folder / f"bucket-{i:04d}.arrows" for i in range(buckets)]
        self._files: list[pa.NativeFile] = []
        self._writers: list[pa.ipc.RecordBatchStreamWriter] = []
        try:
            for p in self.paths:
                self._files.append(pa.OSFile(str(p), "wb"))
                self._writers.append(pa.ipc.new_stream(self._files[-1], self.schema))
        except BaseException:
            self.abort()
            raise

    def add(self, batch: pa.RecordBatch, keys: np.ndarray) -> None:
        """Pass 1: send each row of ``batch`` to the bucket of its key's range (``keys``: (n,) uint64)."""
        batch = pa.RecordBatch.from_arrays([*batch.columns, pa.array(keys)], schema=self.schema)
        k = len(self._writers)
        if k == 1:
            self._writers[0].write_batch(batch)
            return
        bucket = bucket_of(keys, k)  # (n,)
        # Group the rows by bucket in one take, then write each bucket's run as a slice (zero-copy).
        grouped = batch.take(pa.array(np.argsort(bucket, kind="stable")))
        at = 0
        for i, count in enumerate(np.bincount(bucket, minlength=k).tolist()):
            if count:
                self._writers[i].write_batch(grouped.slice(at, count))
            at += count

    def drain(self) -> Iterator[pa.RecordBatch]:
        """Pass 2: every row, bucket by bucket, each bucket sorted by key; then remove the bucket files."""
        self.close()
        for i, path in enumerate(self.paths):
            check_stop()
            size = path.stat().st_size
            if size > 2 * BUCKET_BYTES:  # the size was underestimated: split this bucket again
                yield from self._split_again(i, path, size)
                continue
            table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()  # zero-copy: mapped
            # ties are identical rows: any order of them is the same bytes
            perm = np.argsort(table.column(KEY).to_numpy(), kind="stable")
            table = table.drop_columns([KEY])
            # Taken a slice at a time: the sorted copy never exists whole (half the memory).
            for at in range(0, len(perm), _TAKE_ROWS):
                yield from table.take(pa.array(perm[at : at + _TAKE_ROWS])).to_batches()
            del table
            path.unlink()
        self.folder.rmdir()

    def _split_again(self, i: int, path: Path, size: int) -> Iterator[pa.RecordBatch]:
        schema = self.schema.remove(self.schema.get_field_index(KEY))
        sub = BucketShuffle(self.folder / f"bucket-{i:04d}", schema, bucket_count(size))
        k = np.uint64(len(self.paths))
        try:
            with pa.OSFile(str(path)) as f:
                for batch in pa.ipc.open_stream(f):
                    key = batch.column(KEY).to_numpy()
                    # The key's place within this bucket's range: monotone in the key, so the
                    # sub-buckets, sorted and concatenated, keep the key order (see bucket_of).
                    with np.errstate(over="ignore"):
                        frac = (((key >> np.uint64(32)) * k) << np.uint64(32)) | (key & np.uint64(0xFFFFFFFF))
                    sub.add(batch.drop_columns([KEY]), frac)
            path.unlink()
            yield from sub.drain()
        except BaseException:
            sub.abort()
            raise

    def close(self) -> None:
        """Close the bucket files (idempotent), every one of them even if one fails."""
        writers, files = self._writers, self._files
        self._writers, self._files = [], []
        with contextlib.ExitStack() as stack:  # callbacks run last-in first-out: writers, then files
            for f in files:
                stack.callback(f.close)
            for w in writers:
                stack.callback(w.close)

    def abort(self) -> None:
        """On failure: close the files and remove them, whatever state they are in."""
        with contextlib.suppress(Exception):
            self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
