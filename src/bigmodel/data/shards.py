"""Write a prepared dataset chunk by chunk in bounded memory: split, shard, and count statistics.

Every source (CSV/Parquet, the built-ins, the synthetic generator) feeds one ``ShardWriter``,
so there is one place that decides the split, the file layout and the statistics.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bigmodel.data import rowkey
from bigmodel.data.manifest import MANIFEST, Manifest, Split, Task
from bigmodel.data.shuffle import BucketShuffle, bucket_count
from bigmodel.errors import BigModelError
from bigmodel.fsutil import sha256_file, write_json_atomic

ROW_GROUP_ROWS = 65536  # the reader's unit of I/O: ~16 MB at 64 float32 features
TOKENS = "tokens"  # the one column of a language-modelling dataset
SHARD_ROWS = 1 << 20  # rows per Parquet file
_SHUFFLE = ".shuffle"  # the bucket files of a shuffle, while the dataset is written


def check_seed(seed: int) -> None:
    """numpy seeds only with non-negative integers: say so in one line, before any work is done."""
    if seed < 0:
        raise BigModelError(f"--seed must be >= 0, got {seed}")


def empty_split(source: str, rows: int, split: str, val_fraction: float) -> BigModelError:
    """The error for a split that came out empty (both engines say it alike)."""
    return BigModelError(
        f"dataset {source} has no {split} rows with --val-fraction {val_fraction}: its {rows} rows are too "
        "few or too alike (a row's split is a hash of its bytes, so identical rows share one)"
    )


def lm_schema(context: int) -> pa.Schema:
    """A language-modelling dataset's one column: rows of context + 1 byte tokens (the inputs and
    the targets shifted by one)."""
    tokens = pa.list_(pa.field("item", pa.uint8(), nullable=False), context + 1)
    return pa.schema([pa.field(TOKENS, tokens, nullable=False)])


def content_hash(file_hashes: dict[str, str]) -> str:
    """The dataset's content hash: of its files' sha256, in the manifest's order (train's first)."""
    return hashlib.sha256("".join(f"{k}:{v}\n" for k, v in file_hashes.items()).encode()).hexdigest()


@dataclass
class RunningStats:
    """Per-column mean and variance over a stream (Chan et al.'s parallel update, float64)."""

    n: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def update(self, x: np.ndarray) -> None:  # x: (n, F) or (n,)
        if len(x) == 0:
            return
        x = x.astype(np.float64, copy=False)
        mb = x.mean(axis=0)
        self.merge(len(x), mb, ((x - mb) ** 2).sum(axis=0))

    def merge(self, nb: int, mb: np.ndarray, m2b: np.ndarray) -> None:
        """Fold in another part's count, mean and M2 (a batch's, or a Spark partition's)."""
        if nb == 0:
            return
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * nb / n
        self.m2 = self.m2 + m2b + delta**2 * self.n * nb / n
        self.n = n

    def std(self) -> np.ndarray:
        var = self.m2 / max(self.n, 1)
        sd = np.sqrt(var)
        # A constant feature carries no signal; dividing by 1 keeps it finite.
        return np.where(sd > 1e-12, sd, 1.0)


class _SplitWriter:
    def __init__(
        self, root: Path, split: str, schema: pa.Schema, row_group_rows: int, shard_rows: int, first: int = 0
    ):
        self.root, self.split, self.schema, self.first = root, split, schema, first
        self.row_group_rows, self.shard_rows = row_group_rows, shard_rows
        self.files: list[str] = []
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_file = 0
        self._buf: list[pa.RecordBatch] = []
        self._buf_rows = 0
        (root / split).mkdir(parents=True, exist_ok=True)

    def add(self, batch: pa.RecordBatch) -> None:
        self._buf.append(batch)
        self._buf_rows += batch.num_rows
        while self._buf_rows >= self.row_group_rows:
            self._flush(self.row_group_rows)

    def _flush(self, rows: int) -> None:
        table = pa.Table.from_batches(self._buf, schema=self.schema)
        # One chunk per column: the file's bytes (and the content hash) then do not depend on how
        # the rows came batched, so every engine writes the same shards.
        head, rest = table.slice(0, rows).combine_chunks(), table.slice(rows)
        if self._writer is None or self._rows_in_file >= self.shard_rows:
            self._open_next()
        assert self._writer is not None
        # One call, one row group: the reader shuffles and shards by row group.
        self._writer.write_table(head, row_group_size=rows)
        self._rows_in_file += rows
        self.rows += rows
        self._buf = rest.to_batches()
        self._buf_rows = rest.num_rows

    def _open_next(self) -> None:
        if self._writer is not None:
            self._writer.close()
        name = f"{self.split}/part-{self.first + len(self.files):05d}.parquet"
        self.files.append(name)
        # Uncompressed: float features barely compress and decoding speed is the whole game.
        self._writer = pq.ParquetWriter(
            self.root / name, self.schema, compression="none", use_dictionary=False
        )
        self._rows_in_file = 0

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None

    def close(self) -> None:
        if self._buf_rows:
            self._flush(self._buf_rows)
        if self._writer is not None:
            self._writer.close()


class ShardWriter:
    """Takes ``(X, y)`` chunks, assigns each row to train or val, writes row-grouped Parquet shards
    and computes training-split statistics in the same pass. ``close()`` writes the manifest.

    With ``shuffle_bytes`` (about how many bytes the rows take as float32 columns) the rows of each
    split are written in a random order that depends on the rows and the seed (an external sort by
    ``rowkey``'s order key through bucket files under ``root``, see ``bigmodel.data.shuffle``);
    without it, in the order they came.
    ``random_order``: the rows come in a random order already (drawn independently, or permuted by
    the caller); the manifest records it, as for a shuffle, and the reader then shuffles in blocks."""

    def __init__(
        self,
        root: str | Path,
        *,
        name: str,
        source: str,
        task: Task,
        features: list[str],
        label: str,
        label_values: list[Any] | None,
        seed: int = 0,
        val_fraction: float = 0.2,
        row_group_rows: int | None = None,  # ROW_GROUP_ROWS, read when called (tests lower it)
        shard_rows: int | None = None,  # SHARD_ROWS, read when called (tests lower it)
        context: int = 0,
        shuffle_bytes: int | None = None,
        random_order: bool = False,
    ):
        if not 0.0 < val_fraction < 1.0:
            raise BigModelError(f"--val-fraction must be in (0, 1), got {val_fraction}")
        self.root = Path(root)
        self.meta: dict[str, Any] = dict(
            name=name,
            source=source,
            task=task,
            features=features,
            label=label,
            label_values=label_values,
            seed=seed,
            val_fraction=val_fraction,
            shuffled=shuffle_bytes is not None or random_order,
        )
        # Required (non-nullable) columns and PLAIN encoding: nothing is ever missing, and without
        # definition levels and dictionary pages a row group decodes ~3x faster.
        label_type = pa.float32() if task == "regression" else pa.int64()
        fields = [pa.field(f, pa.float32(), nullable=False) for f in features]
        self.schema = pa.schema([*fields, pa.field(label, label_type, nullable=False)])
        if task == "lm":
            self.schema = lm_schema(context)
            self.meta.update(context=context, vocab=256)
        self._label_dtype = np.float32 if task == "regression" else np.int64
        self.splits = {
            s: _SplitWriter(
                self.root, s, self.schema, row_group_rows or ROW_GROUP_ROWS, shard_rows or SHARD_ROWS
            )
            for s in ("train", "val")
        }
        self._shuffles: dict[str, BucketShuffle] = {}
        if shuffle_bytes is not None:
            for split, share in (("train", 1 - val_fraction), ("val", val_fraction)):
                buckets = bucket_count(int(shuffle_bytes * share))
                self._shuffles[split] = BucketShuffle(self.root / _SHUFFLE / split, self.schema, buckets)
        self.x_stats = RunningStats()
        self.y_stats = RunningStats()
        self._rows_seen = 0

    def write(self, x: np.ndarray, y: np.ndarray | None) -> None:
        """Append rows: ``x`` (n, F) float32, ``y`` (n,) codes or targets; for ``lm``, ``x`` is
        (n, context + 1) uint8 tokens and ``y`` is None."""
        n = len(x)
        if n == 0:
            return
        self._rows_seen += n
        if self.meta["task"] == "lm":
            # As for tabular rows: split and order are hashes of the row's bytes and the seed, so the
            # Spark engine, which cuts the same rows out of the text, writes the same shards.
            tokens = np.ascontiguousarray(x, dtype=np.uint8)  # (n, context + 1)
            is_val = rowkey.tokens_is_val(tokens, self.meta["seed"], self.meta["val_fraction"])
            for split, mask in (("train", ~is_val), ("val", is_val)):
                if mask.any():
                    rows = tokens[mask]
                    col = pa.FixedSizeListArray.from_arrays(
                        pa.array(rows.reshape(-1)), type=self.schema.field(0).type
                    )
                    keys = (
                        rowkey.tokens_order_key(rows, self.meta["seed"]) if split in self._shuffles else None
                    )
                    self._add(split, pa.RecordBatch.from_arrays([col], schema=self.schema), keys)
            return
        assert y is not None
        y = y.astype(self._label_dtype, copy=False)
        # Tabular rows: the split (and, shuffled, the order) is a function of the row's bytes and the
        # seed alone (bigmodel.data.rowkey), so the Spark engine writes the very same shards.
        x = np.ascontiguousarray(x, dtype=np.float32)
        is_val = rowkey.is_val(x, y, self.meta["seed"], self.meta["val_fraction"])
        for split, mask in (("train", ~is_val), ("val", is_val)):
            xs, ys = x[mask], y[mask]
            if not len(xs):
                continue
            if split == "train":
                self.x_stats.update(xs)
                if self.meta["task"] == "regression":
                    self.y_stats.update(ys)
            cols = [pa.array(xs[:, j]) for j in range(xs.shape[1])] + [pa.array(ys)]
            keys = rowkey.order_key(xs, ys, self.meta["seed"]) if split in self._shuffles else None
            self._add(split, pa.RecordBatch.from_arrays(cols, schema=self.schema), keys)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self.abort()

    def abort(self) -> None:
        """On failure: close every open file (the caller removes the half-written folder)."""
        for shuffle in self._shuffles.values():
            shuffle.abort()
        for w in self.splits.values():
            w.abort()

    def _add(self, split: str, batch: pa.RecordBatch, keys: np.ndarray | None = None) -> None:
        shuffle = self._shuffles.get(split)
        if shuffle is not None:
            assert keys is not None, "a shuffled split needs each row's order key"
            shuffle.add(batch, keys)
        else:
            self.splits[split].add(batch)

    def close(self, advance: Callable[[int], None] | None = None) -> Manifest:
        """Finish the shards (after a shuffle's second pass, which reports its rows to ``advance``)
        and write the manifest."""
        for split, shuffle in self._shuffles.items():
            for batch in shuffle.drain():
                self.splits[split].add(batch)
                if advance is not None:
                    advance(batch.num_rows)
        self._shuffles.clear()
        if (self.root / _SHUFFLE).exists():
            (self.root / _SHUFFLE).rmdir()  # emptied by each split's drain
        for w in self.splits.values():
            w.close()
        if self._rows_seen == 0:
            context = self.meta.get("context")
            short = f" (text needs more than --context {context} bytes for one row)" if context else ""
            raise BigModelError(f"dataset {self.meta['source']} is empty: no rows{short}")
        for split, w in self.splits.items():
            if w.rows == 0:
                raise empty_split(self.meta["source"], self._rows_seen, split, self.meta["val_fraction"])
        file_hashes = {f: sha256_file(self.root / f) for w in self.splits.values() for f in w.files}
        content = content_hash(file_hashes)
        extra: dict[str, Any] = {}
        if self.meta["task"] == "regression":
            extra = dict(target_mean=float(self.y_stats.mean), target_std=float(self.y_stats.std()))
        manifest = Manifest(
            **self.meta,
            splits={s: Split(files=w.files, rows=w.rows) for s, w in self.splits.items()},
            mean=[float(v) for v in self.x_stats.mean] if self.x_stats.n else [],
            std=[float(v) for v in self.x_stats.std()] if self.x_stats.n else [],
            content_hash=content,
            file_hashes=file_hashes,
            **extra,
        )
        write_json_atomic(self.root / MANIFEST, manifest.model_dump(mode="json"))
        return manifest
