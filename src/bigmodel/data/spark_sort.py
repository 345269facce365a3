"""The back half of every ``--engine spark`` job: encoded rows (split, sort key, the shard's
columns) become sorted Parquet shards at DST, the local engine's files byte for byte.

1. The encoded rows are persisted DISK_ONLY (computed once, kept on the executors' disks).
2. A histogram of the sort key's top bits per split (O(buckets) rows to the driver) gives the split
   sizes, and the buckets that hold a shard's first row;
3. the rows of those few buckets (about shards x rows/65536) give each shard's exact first key;
4. each row's shard is then a comparison with those keys; rows are hash-partitioned by shard,
   sorted within it, and written by the local engine's own ``_SplitWriter``, which also returns the
   shard's training statistics (count, mean, M2).

The caller makes the manifest from those reports; it is written last, inside the temporary folder
that is renamed to DST, so a job that fails or is killed commits nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bigmodel.data import shards
from bigmodel.data import spark_tasks as t
from bigmodel.data.manifest import MANIFEST, Manifest
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_dir, write_json_atomic

Report = list[dict[str, Any]]  # per shard file: file, sha256, rows, statistics (spark_tasks.WRITTEN)


def sort_and_write(
    enc: Any,
    dst: Path,
    buckets: list[Any],
    schema: Any,
    sizes: tuple[int, int],
    recorded: str,
    vf: float,
    phase: Callable[[str], None],
    manifest_of: Callable[[Report, list[int]], Manifest],
    empty: str = "",
) -> Manifest:
    """Write ``enc`` (columns SPLIT, K1, then the shard's columns in ``schema``'s order) sorted by
    (K1, row id) into ``dst``. ``buckets``: Spark expressions of K1 (and K2) non-decreasing in the
    sort order with at most ~65,536 distinct values. ``sizes``: rows per row group and per shard."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as sf

    # the row id breaks ties in K1 (identical rows, or rows of one source file) and is unique
    enc = enc.withColumn(t.K2, sf.monotonically_increasing_id())
    enc.persist(StorageLevel.DISK_ONLY)
    try:
        phase("encode")
        # the local writer starts a new file at the first row group boundary at or past shard_rows
        group, per = sizes[0], -(-sizes[1] // sizes[0]) * sizes[0]
        counts, firsts = _shard_starts(enc, buckets, per, phase)
        n = counts[0] + counts[1]
        if n == 0:
            raise BigModelError(f"dataset {recorded} is empty: no rows{empty}")
        for s, split in enumerate(("train", "val")):
            if counts[s] == 0:
                raise shards.empty_split(recorded, n, split, vf)
        names = [("train", k) for k in range(len(firsts[0]) + 1)] + [
            ("val", k) for k in range(len(firsts[1]) + 1)
        ]
        shard = sf.when(sf.col(t.SPLIT) == 0, _count_le(firsts[0], 0, len(firsts[0]))).otherwise(
            len(firsts[0]) + 1 + _count_le(firsts[1], 0, len(firsts[1]))
        )
        phase("sort and write")
        columns = enc.columns[2 : 2 + len(schema)]  # after SPLIT and K1
        schema_ipc = schema.serialize().to_pybytes()
        with atomic_dir(dst) as tmp:
            root = str(tmp)
            written = [
                r.asDict()
                for r in enc.withColumn(t.SHARD, shard)
                .repartition(len(names), t.SHARD)
                .sortWithinPartitions(t.SHARD, t.K1, t.K2)
                .select(t.SHARD, *columns)
                .mapInArrow(lambda it: t.write(it, root, schema_ipc, names, (group, per)), t.WRITTEN)
                .collect()
            ]
            written.sort(key=lambda w: (not w["file"].startswith("train/"), w["file"]))
            for s, split in enumerate(("train", "val")):
                got = sum(w["rows"] for w in written if w["file"].startswith(f"{split}/"))
                if got != counts[s]:  # a lost or repeated task would show here; never commit it
                    raise BigModelError(f"the Spark job wrote {got} {split} rows, expected {counts[s]}")
            manifest = manifest_of(written, counts)
            write_json_atomic(tmp / MANIFEST, manifest.model_dump(mode="json"))
    finally:
        enc.unpersist()
    return manifest


def _shard_starts(
    enc: Any, buckets: list[Any], per: int, phase: Callable[[str], None]
) -> tuple[list[int], list[list[tuple[Any, int]]]]:
    """(rows per split, the (k1, k2) of each shard's first row after the split's first shard).
    Buckets are monotone in (k1, k2), so counting rows per bucket finds the bucket holding a given
    rank; only those buckets' keys come to the driver."""
    from pyspark.sql import functions as sf

    k1, k2 = sf.col(t.K1), sf.col(t.K2)
    named = [b.alias(f"b{i}") for i, b in enumerate(buckets)]
    hist = enc.groupBy(sf.col(t.SPLIT), *named).count().collect()  # O(buckets)
    counts = [0, 0]
    wanted: list[tuple[int, tuple[Any, ...], int]] = []  # (split, bucket, rank within the bucket)
    for s in (0, 1):
        rows = sorted((tuple(r[1:-1]), r[-1]) for r in hist if r[0] == s)
        counts[s] = sum(c for _, c in rows)
        seen, it = 0, iter(rows)
        bucket: tuple[Any, ...] = ()
        c = 0
        for rank in range(per, counts[s], per):
            while seen + c <= rank:
                seen += c
                bucket, c = next(it)
            wanted.append((s, bucket, rank - seen))
    firsts: list[list[tuple[Any, int]]] = [[], []]
    if not wanted:
        return counts, firsts
    cond = None
    for s, bucket, _ in {(s, b, 0) for s, b, _ in wanted}:
        term = sf.col(t.SPLIT) == s
        for b, v in zip(buckets, bucket, strict=True):
            term = term & (b == v)
        cond = term if cond is None else cond | term
    phase("shard boundaries")
    keys: dict[tuple[int, tuple[Any, ...]], list[tuple[Any, int]]] = {}
    for r in enc.where(cond).select(sf.col(t.SPLIT), *named, k1, k2).collect():
        keys.setdefault((r[0], tuple(r[1:-2])), []).append((r[-2], r[-1]))
    for s, bucket, at in wanted:
        firsts[s].append(sorted(keys[(s, bucket)])[at])
    return counts, firsts


def _count_le(firsts: list[tuple[Any, int]], lo: int, hi: int) -> Any:
    """Spark expression: how many of ``firsts[lo:hi]`` (sorted) are <= the row's (k1, k2), plus lo;
    a binary search, so a row is compared with log2(shards) keys."""
    from pyspark.sql import functions as sf

    if lo == hi:
        return sf.lit(lo)
    mid = (lo + hi) // 2
    a, b = firsts[mid]
    k1 = sf.col(t.K1)
    at_or_after = (k1 > sf.lit(a)) | ((k1 == sf.lit(a)) & (sf.col(t.K2) >= sf.lit(b)))
    return sf.when(at_or_after, _count_le(firsts, mid + 1, hi)).otherwise(_count_le(firsts, lo, mid))
