"""Stream a prepared split in global batches that do not depend on the number of workers.

The order of rows in an epoch is a function of (seed, epoch) only: row groups are permuted, their
rows laid end to end as a *stream*, and the stream is cut into windows of ``W`` rows (a multiple of
the global batch ``B``) whose rows are shuffled among themselves. Global batch ``j`` is stream rows
``[jB, (j+1)B)``; rank ``r`` of ``N`` takes the slice ``[r*b//N, (r+1)*b//N)`` of it. So N workers see,
step by step, exactly the rows one worker sees, every rank gets the same number of batches (no hang
on unequal shards), and DataLoader workers take whole windows in turn, which keeps the order.

Memory is bounded by a few windows whatever the dataset size. Each rank decodes every row group of
the windows it reads and keeps its ``1/N`` share: the price of world-size-independent batches.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from bigmodel.data.manifest import Manifest
from bigmodel.data.pipeline import Pipeline, background
from bigmodel.errors import BigModelError


@dataclass(frozen=True, slots=True)
class Batch:
    x: torch.Tensor  # (b_r, F) float32 (column-major), this rank's rows of the batch; lm: (b_r, T) int64
    y: (
        torch.Tensor
    )  # (b_r,) int64 codes (multiclass) or float32 (binary, regression); lm: (b_r, T) next tokens
    rows: int  # rows in the global batch, over all ranks
    index: int  # batch number within the epoch


@dataclass(frozen=True)
class RowGroup:
    path: str
    index: int
    rows: int
    meta: pq.FileMetaData  # its file's footer, parsed once: reopening the file skips the ~1 ms parse


Window = tuple[int, torch.Tensor, torch.Tensor]  # (k, x, y): this rank's rows of window k
Pieces = tuple[int, list[pa.Table], np.ndarray | None]  # (k, Arrow slices, positions to take) of window k


def rank_slice(b: int, world: int, rank: int) -> tuple[int, int]:
    """Rank ``rank``'s half-open share of a global batch of ``b`` rows."""
    return rank * b // world, (rank + 1) * b // world


def list_row_groups(root: str | Path, manifest: Manifest, split: str) -> list[RowGroup]:
    groups: list[RowGroup] = []
    for f in manifest.split(split).files:
        path = str(Path(root) / f)
        with shard_errors(path):
            meta = pq.ParquetFile(path).metadata
        groups.extend(RowGroup(path, i, meta.row_group(i).num_rows, meta) for i in range(meta.num_row_groups))
    return groups


@contextlib.contextmanager
def shard_errors(path: str) -> Iterator[None]:
    """A shard that Arrow cannot read (truncated, overwritten, deleted) is a one-line error naming it.
    Checking every shard's hash before reading would cost a full pass over the dataset."""
    try:
        yield
    except (pa.ArrowException, OSError) as err:
        raise BigModelError(
            f"cannot read shard {path}: {str(err).splitlines()[0]} (prepare the dataset again)"
        ) from None


class ParquetStream(IterableDataset):
    """Yields ``(window, x, y)``: this rank's rows of one window, in stream order.

    Reading a window has two stages, ``read`` (Parquet row groups -> Arrow slices: I/O and
    decoding) and ``assemble`` (Arrow columns -> one (F, n) array of this rank's rows, shuffled);
    ``iterate`` (one epoch) and ``epochs`` (all of them, in one pipeline) run the two in background
    threads so that they overlap each other and the training step.
    """

    def __init__(
        self,
        root: str | Path,
        manifest: Manifest,
        split: str,
        *,
        batch_size: int,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        window_rows: int = 65536,
    ):
        self.manifest = manifest
        self.groups: list[RowGroup] = list_row_groups(root, manifest, split)
        self.n = sum(g.rows for g in self.groups)
        self.batch_size = batch_size
        self.rank, self.world = rank, world
        self.seed, self.shuffle = seed, shuffle
        self.window = math.ceil(window_rows / batch_size) * batch_size  # whole global batches
        self.tokens = manifest.task == "lm"
        self.columns = [manifest.label] if self.tokens else [*manifest.features, manifest.label]
        self.y_dtype = np.int64 if manifest.task == "multiclass" else np.float32
        self.epoch = 0
        self.start_batch = 0

    @property
    def num_batches(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def batch_rows(self, j: int) -> int:
        return min(self.batch_size, self.n - j * self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    @property
    def num_windows(self) -> int:
        return math.ceil(self.n / self.window)

    def _order(self, epoch: int) -> list[RowGroup]:
        if not self.shuffle:
            return self.groups
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.groups))
        return [self.groups[i] for i in perm]

    def __iter__(self) -> Iterator[Window]:  # DataLoader workers: the epoch given to set_epoch
        for k, pieces, take in self.read(self.epoch, self.start_batch):
            yield self.assemble(k, pieces, take)

    def read(self, epoch: int, start_batch: int = 0) -> Iterator[Pieces]:
        """Stage 1: for each window this (DataLoader) worker owns, the Arrow slices that make it and
        the positions of this rank's rows within it, in shuffled order (None: all rows, in order)."""
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        order = self._order(epoch)
        starts = np.cumsum([0] + [g.rows for g in order])
        last: tuple[int, pa.Table] | None = None  # a row group that straddles two windows is read once
        first = start_batch * self.batch_size // self.window
        for k in range(first, self.num_windows):
            if (k - first) % nw != wid:
                continue
            lo, hi = k * self.window, min(self.n, (k + 1) * self.window)
            g = int(np.searchsorted(starts, lo, side="right")) - 1
            pieces, pos = [], lo
            while pos < hi:
                rg = order[g]
                if last is None or last[0] != g:
                    # Memory-mapped: decoding reads the page cache in place (about 2x faster than
                    # buffered reads here). Opened per row group, so a mapping lives only as long
                    # as the window that uses it and RSS stays bounded by a few windows.
                    with (
                        shard_errors(rg.path),
                        pq.ParquetFile(rg.path, memory_map=True, metadata=rg.meta) as pf,
                    ):
                        last = (g, pf.read_row_group(rg.index, columns=self.columns))
                a, b = pos - starts[g], min(rg.rows, hi - starts[g])  # rows of this group in the window
                pieces.append(last[1].slice(a, b - a))
                pos += b - a
                g += 1
            yield k, pieces, self._take(k, hi - lo, epoch)

    def _take(self, k: int, w: int, epoch: int) -> np.ndarray | None:
        """Positions of this rank's rows within window k (w rows), in the order it trains on them.
        Computed in the read stage: the permutation (~1 ms per 64k rows) would otherwise lengthen the
        assemble stage, the slower of the two."""
        take = self._rank_rows(k, w)
        if self.shuffle:
            perm = np.random.default_rng([self.seed, epoch, k]).permutation(w)
            take = perm if take is None else perm[take]
        return take

    def assemble(self, k: int, pieces: list[pa.Table], take: np.ndarray | None) -> Window:
        """Stage 2: one window's slices -> this rank's rows in stream order: x (n, F), a view of a
        contiguous (F, n) array, and y (n,)."""
        if self.tokens:
            tok = np.concatenate([_token_rows(p) for p in pieces])  # (w, T + 1) uint8
            if take is not None:
                tok = np.take(tok, take, axis=0)
            return k, torch.from_numpy(tok), torch.empty(0)
        # Each feature column is gathered straight from its Arrow buffer into one row of an (F, n)
        # array: this rank's rows only, shuffled, in one pass. (Copying the window side by side first
        # and gathering with one index_select is ~15% faster at 64 features but slower at 256, where
        # the 64 MB copy costs more than it saves; and most of the rows are another rank's at N > 1.)
        # Batches come out column-major, (b, F) views of (F, n); a model's first layer takes that as is.
        nf = len(self.manifest.features)
        w = sum(p.num_rows for p in pieces)
        n = w if take is None else len(take)
        x = np.empty((nf, n), np.float32)
        for i in range(nf):
            col = _column(pieces, i)
            if take is None:
                x[i] = col
            else:  # mode="clip": the indices are in range, and "raise" would buffer the output
                np.take(col, take, out=x[i], mode="clip")
        y = _column(pieces, nf).astype(self.y_dtype, copy=False)
        y = y.copy() if take is None else y[take]
        return k, torch.from_numpy(x).t(), torch.from_numpy(y)

    def _rank_rows(self, k: int, w: int) -> np.ndarray | None:
        """Positions within window k that belong to this rank, in stream order (None: all)."""
        if self.world == 1:
            return None
        parts = []
        first_batch = k * self.window // self.batch_size
        for j in range(first_batch, first_batch + math.ceil(w / self.batch_size)):
            a, b = rank_slice(self.batch_rows(j), self.world, self.rank)
            off = j * self.batch_size - k * self.window
            parts.append(np.arange(off + a, off + b))
        return np.concatenate(parts)

    def split_window(self, k: int, x: torch.Tensor, y: torch.Tensor, start_batch: int = 0) -> Iterator[Batch]:
        """Cut one window's rows into this rank's batches, skipping those before start_batch."""
        at = 0
        first_batch = k * self.window // self.batch_size
        last = min(self.num_batches, first_batch + self.window // self.batch_size)
        for j in range(first_batch, last):
            rows = self.batch_rows(j)
            a, b = rank_slice(rows, self.world, self.rank)
            if j >= start_batch:
                if self.tokens:  # a row of T + 1 tokens: inputs are the first T, targets the last T
                    tok = x[at : at + b - a]
                    yield Batch(tok[:, :-1].long(), tok[:, 1:].long(), rows, j)
                else:
                    yield Batch(x[at : at + b - a], y[at : at + b - a], rows, j)
            at += b - a


def _column(pieces: list[pa.Table], i: int) -> np.ndarray:
    """Column ``i`` of a window's slices as one numpy array (zero-copy when it is one chunk)."""
    parts = [c.to_numpy(zero_copy_only=False) for p in pieces for c in p.column(i).chunks]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _token_rows(table: pa.Table) -> np.ndarray:
    """A fixed-size-list<uint8> column -> (rows, T + 1) uint8 (zero-copy per chunk)."""
    col = table.column(0)
    width = col.type.list_size
    parts = [c.flatten().to_numpy().reshape(-1, width) for c in col.chunks]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def iterate(
    stream: ParquetStream, epoch: int, *, start_batch: int = 0, loader_workers: int = 0, prefetch: int = 2
) -> Generator[Batch, None, None]:
    """This rank's batches of one epoch, from ``start_batch`` on (resuming mid-epoch)."""
    each = epochs(
        stream,
        range(epoch, epoch + 1),
        start_batch=start_batch,
        loader_workers=loader_workers,
        prefetch=prefetch,
    )
    with contextlib.closing(each):
        yield from next(each)


def epochs(
    stream: ParquetStream,
    epoch_range: range,
    *,
    start_batch: int = 0,
    loader_workers: int = 0,
    prefetch: int = 2,
) -> _Epochs | Generator[Generator[Batch, None, None], None, None]:
    """For each epoch of ``epoch_range``, an iterator over this rank's batches (the first from
    ``start_batch``). One background pipeline runs through all of them, and it starts reading when
    ``epochs`` is called: the first windows load while the caller builds its model, and the next
    epoch's first windows while this one ends and validation runs. Each epoch's iterator must be used
    up before the next is taken (leaving early is fine). Close the result when done, or on failure
    before the first epoch: that stops the pipeline's threads."""
    use_system_allocator()
    if loader_workers > 0 or prefetch <= 0:  # DataLoader worker processes, or no threads at all
        return _epochs_in_turn(stream, epoch_range, start_batch, loader_workers, prefetch)

    def read_all() -> Iterator[tuple[int, int, Pieces]]:
        for i, epoch in enumerate(epoch_range):
            sb = start_batch if i == 0 else 0
            for pieces in stream.read(epoch, sb):
                yield epoch, sb, pieces

    def assemble_all() -> Iterator[tuple[int, int, Window]]:
        with contextlib.closing(background(read_all(), prefetch)) as read_stage:
            for epoch, sb, pieces in read_stage:
                yield epoch, sb, stream.assemble(*pieces)

    return _Epochs(stream, epoch_range, background(assemble_all(), prefetch))


class _Epochs:
    """``epochs`` on the threaded path: an iterator over epochs whose ``close`` stops the pipeline,
    whether or not an epoch was taken yet (a generator's ``finally`` would not run before its
    first ``next``, and a caller that fails while building its model has taken none)."""

    def __init__(self, stream: ParquetStream, epoch_range: range, pipe: Pipeline[tuple[int, int, Window]]):
        self.stream, self.pipe = stream, pipe
        self.todo = iter(epoch_range)

    def __iter__(self) -> _Epochs:
        return self

    def __next__(self) -> Generator[Batch, None, None]:
        epoch = next(self.todo, None)
        if epoch is None:
            self.close()
            raise StopIteration
        return self._one(epoch)

    def _one(self, epoch: int) -> Generator[Batch, None, None]:
        for e, sb, (k, x, y) in self.pipe:
            if e < epoch:  # the rest of an epoch its caller stopped early
                continue
            yield from self.stream.split_window(k, x, y, sb)
            if k == self.stream.num_windows - 1:  # the epoch's last window: do not wait for the next one
                return

    def close(self) -> None:
        self.pipe.close()


def _epochs_in_turn(
    stream: ParquetStream, epoch_range: range, start_batch: int, loader_workers: int, prefetch: int
) -> Generator[Generator[Batch, None, None], None, None]:
    for i, epoch in enumerate(epoch_range):
        sb = start_batch if i == 0 else 0
        stream.set_epoch(epoch, sb)
        windows: Iterable[Window] = stream
        if loader_workers > 0:
            windows = DataLoader(
                stream, batch_size=None, num_workers=loader_workers, prefetch_factor=max(prefetch, 1)
            )
        yield _split(stream, windows, sb)


def use_system_allocator() -> None:
    """Make pyarrow allocate from glibc's malloc unless the user chose a pool
    (``ARROW_DEFAULT_MEMORY_POOL``). pyarrow's default, mimalloc, hands the freed buffers of one
    window back to the OS and faults fresh pages in for the next; glibc reuses them. On the 2-core
    bench machine that cut the data wait of 2-worker training from 5-7% to 1.5-3% of step time and
    the first (cold) epoch's reading by half."""
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ and pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


def _split(
    stream: ParquetStream, windows: Iterable[Window], start_batch: int
) -> Generator[Batch, None, None]:
    for k, x, y in windows:
        yield from stream.split_window(k, x, y, start_batch)
