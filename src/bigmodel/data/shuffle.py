"""Shuffle a dataset's rows once, while it is prepared, in bounded memory.

The reader permutes row groups and shuffles rows only within windows of ~64k rows, so a big source
sorted by label or time would reach training nearly in that order: every batch of a label-sorted
source would hold one class. ``BucketShuffle`` is the classic two-pass external shuffle. Pass 1
sends each row to one of K bucket files picked uniformly at random; pass 2 reads the buckets one at
a time, permutes each in memory and hands its rows on. A random bucket and then a random place in it
is a uniformly random permutation of all the rows (Rao 1961, Sandelius 1962), and memory holds one
bucket: K grows with the data so that a bucket stays near ``BUCKET_BYTES``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

BUCKET_BYTES = 256 << 20  # pass 2 holds one bucket in memory
MAX_BUCKETS = 256  # open files per split; past 64 GB a split's buckets grow instead
_TAKE_ROWS = 65536


def bucket_count(expected_bytes: int) -> int:
    """Buckets for a split of about ``expected_bytes`` (as float32/int64 columns in memory)."""
    return max(1, min(MAX_BUCKETS, math.ceil(expected_bytes / BUCKET_BYTES)))


class BucketShuffle:
    """Rows in with ``add`` (pass 1), out with ``drain`` (pass 2) in a random order that depends on
    ``seed`` and ``salt`` only. The bucket files live in ``folder``, which ``drain`` removes."""

    def __init__(self, folder: Path, schema: pa.Schema, buckets: int, seed: int, salt: int):
        self.folder = folder
        self.seed, self.salt = seed, salt
        folder.mkdir(parents=True)
        self.paths = [folder / f"bucket-{i:04d}.arrows" for i in range(buckets)]
        self._files = [pa.OSFile(str(p), "wb") for p in self.paths]
        self._writers = [pa.ipc.new_stream(f, schema) for f in self._files]
        self._chunk = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Pass 1: send each row of ``batch`` to a uniformly random bucket."""
        k = len(self._writers)
        if k == 1:
            self._writers[0].write_batch(batch)
            return
        rng = np.random.default_rng([self.seed, self.salt, 1, self._chunk])
        self._chunk += 1
        bucket = rng.integers(0, k, size=batch.num_rows)  # (n,)
        # Group the rows by bucket in one take, then write each bucket's run as a slice (zero-copy).
        grouped = batch.take(pa.array(np.argsort(bucket, kind="stable")))
        at = 0
        for i, count in enumerate(np.bincount(bucket, minlength=k).tolist()):
            if count:
                self._writers[i].write_batch(grouped.slice(at, count))
            at += count

    def drain(self) -> Iterator[pa.RecordBatch]:
        """Pass 2: every row, bucket by bucket, each bucket permuted; then remove the bucket files."""
        self.close()
        for i, path in enumerate(self.paths):
            table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()  # zero-copy: mapped
            perm = np.random.default_rng([self.seed, self.salt, 2, i]).permutation(table.num_rows)
            # Taken a slice at a time: the permuted copy never exists whole (~1.5x the time of one
            # take, half the memory).
            for at in range(0, len(perm), _TAKE_ROWS):
                yield from table.take(pa.array(perm[at : at + _TAKE_ROWS])).to_batches()
            del table
            path.unlink()
        shutil.rmtree(self.folder, ignore_errors=True)

    def close(self) -> None:
        """Close the bucket files (idempotent); ``drain`` calls it, so does a writer that fails."""
        for w in self._writers:
            w.close()
        for f in self._files:
            f.close()
        self._writers, self._files = [], []
