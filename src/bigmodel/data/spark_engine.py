"""``data prepare --engine spark``: the same shards + manifest as the local engine, written by Spark
executors, with no per-row Python objects (Arrow batches through ``mapInArrow``).

A row's split and place are functions of the row and the seed (``bigmodel.data.rowkey``): the rows
of a split sorted by ``(order key, row id)`` are the local engine's rows in the local engine's order.
The job, in four passes over data kept on the executors' disks:

1. encode: each Arrow batch is checked as the local engine checks it and gets its split and sort
   key (float32 features, int64 class codes or float32 targets); persisted, DISK_ONLY.
2. a histogram of the sort key's top bits per split (O(buckets) rows to the driver) gives the
   split sizes, and the buckets that hold a shard's first row;
3. the rows of those few buckets (about shards x rows/65536) give each shard's exact first key;
4. each row's shard is then a comparison with those keys; rows are hash-partitioned by shard,
   sorted within it, and written by the local engine's own ``_SplitWriter`` (byte-identical files),
   which also returns the shard's training statistics (count, mean, M2), merged in shard order.

The driver holds O(buckets + shards x features) and writes ``manifest.json``, then renames the
temporary folder to DST. pyspark is imported only inside functions: it is an optional extra.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from bigmodel.data import shards
from bigmodel.data import spark_tasks as t
from bigmodel.data.manifest import MANIFEST, Manifest, Split, Task
from bigmodel.data.spark_session import first_line, inspect, is_spark_dataframe, load, session, stage_progress
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_dir, write_json_atomic

__all__ = ["is_spark_dataframe", "prepare_spark"]

_MAX_LABELS = 10000
_NULLS = frozenset(pcsv.ConvertOptions().null_values)  # "NA", "null", "nan", "" ...


def _col(name: str) -> Any:
    """The column called ``name``, whatever it holds: Spark reads "a.b" as field b of struct a."""
    from pyspark.sql import functions as sf

    return sf.col("`" + name.replace("`", "``") + "`")


def _pa_type(spark_type: Any) -> pa.DataType:
    name = type(spark_type).__name__
    if name in ("DoubleType", "FloatType"):
        return pa.float64()
    if name == "DecimalType":
        if (spark_type.precision, spark_type.scale) == (20, 0):  # a Parquet UINT64, as Spark reads it
            return pa.float64()
        return pa.decimal128(38)  # the local engine reads decimals as not numeric: so do we
    if name in ("LongType", "IntegerType", "ShortType", "ByteType"):
        return pa.int64()
    if name == "BooleanType":
        return pa.bool_()
    return pa.string() if name == "StringType" else pa.null()


def prepare_spark(
    src: Any,
    dst: str | Path,
    *,
    label: str = "label",
    val_fraction: float = 0.2,
    seed: int = 0,
    task: Task | None = None,
    name: str | None = None,
    shuffle: bool = True,
    master: str = "local[2]",
    conf: dict[str, str] | None = None,
    infer_task: Callable[[pa.DataType, list[Any], int], Task],
    progress: bool = False,
) -> Manifest:
    """Prepare ``src`` (a path, ``delta:`` table, or a pyspark DataFrame) into ``dst`` on Spark.
    Same contract and, for the same rows, seed and split, the same shards and content hash as
    ``bigmodel.data.prepare`` with the local engine, which calls this (and passes its
    ``infer_task``, so both guess a task alike)."""
    from bigmodel.data.shards import check_seed

    if task == "lm":
        raise BigModelError("--task lm is not supported by --engine spark yet; use --engine local")
    # Spark reaches object stores through Hadoop's s3a connector (jars this install does not ship), and
    # the shards are written by the executors to a path they all see: refuse before a job starts
    for what, where in (("source", "" if is_spark_dataframe(src) else str(src)), ("destination", str(dst))):
        if "://" in where.removeprefix("delta:") and not where.removeprefix("delta:").startswith("file://"):
            raise BigModelError(
                f"--engine spark reads and writes local or shared-filesystem paths, not the {what} {where}; "
                "use --engine local for object storage"
            )
    dst = Path(dst)
    if dst.exists():
        raise BigModelError(
            f"destination already exists: {dst} (choose a new folder; nothing was overwritten)"
        )
    check_seed(seed)
    if not 0.0 < val_fraction < 1.0:
        raise BigModelError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    for parent in dst.parents:  # a file where DST's folder should be: refused now, not after the job
        if parent.exists():
            if not parent.is_dir():
                raise BigModelError(f"cannot create {dst}: {parent} is a file")
            break
    source = None
    if not is_spark_dataframe(src):
        # Files, columns and label checked before a JVM starts (seconds, not a Spark start-up).
        source = inspect(str(src))
        if source.schema is not None and label not in source.schema.names:
            raise BigModelError(
                f"label column '{label}' not found in {source.recorded} "
                f"(columns: {', '.join(source.schema.names)}); pass --label COL"
            )
        spark = session(master, conf or {})
    try:
        df = src if source is None else load(spark, source)
        # the local engine's CSV reader reads "NA", "null", "nan" ... as missing, in a text column too
        nulls = _NULLS if source is not None and source.csv_sep is not None else frozenset()
        origin = (source.recorded, source.delta_version) if source is not None else ("spark-dataframe", None)
        with stage_progress(df.sparkSession, progress) as phase:
            return _run(
                df, dst, *origin, label, val_fraction, seed, task, name, shuffle, infer_task, nulls, phase
            )
    except BigModelError:
        raise
    except Exception as err:  # a Py4J or executor failure: one line, the BigModelError inside if any
        raise BigModelError(f"spark job failed: {first_line(err)}") from None


def _run(
    df: Any,
    dst: Path,
    recorded: str,
    version: int | None,
    label: str,
    vf: float,
    seed: int,
    task: Task | None,
    name: str | None,
    shuffle: bool,
    infer_task: Any,
    nulls: frozenset[str],
    phase: Callable[[str], None],
) -> Manifest:
    from pyspark import StorageLevel
    from pyspark.sql import functions as sf

    phase("labels")
    features, values, task = _columns(df, recorded, label, task, infer_task, nulls)
    regression = task == "regression"
    schema = t.shard_schema(features, label, regression)
    cols = [*features, label]
    if not shuffle:  # the source order: file by file, then the order rows were read in
        df = df.withColumn(t.FILE, sf.input_file_name())
        cols.append(t.FILE)
    enc_schema = t.encoded_schema(len(features), regression, shuffle)
    enc = (
        # by position: pyspark's mapInArrow looks its input columns up by name, and a name with a
        # backtick (legal in CSV and Parquet) does not parse there
        df.select(*(_col(c).alias(f"__bm_in{i}__") for i, c in enumerate(cols)))
        .mapInArrow(lambda it: t.encode(it, label, features, values, seed, vf, shuffle), enc_schema)
        .withColumn(t.K2, sf.monotonically_increasing_id())  # unique: ties in k1 are identical rows
    )
    # Computed once, kept on the executors' disks (bounded memory) for the passes below.
    enc.persist(StorageLevel.DISK_ONLY)
    try:
        sizes = (shards.ROW_GROUP_ROWS, shards.SHARD_ROWS)  # read now: tests lower them
        phase("encode")
        counts, firsts = _shard_starts(enc, shuffle, sizes[1], phase)
        n = counts[0] + counts[1]
        if n == 0:
            raise BigModelError(f"dataset {recorded} is empty: no rows")
        for s, split in enumerate(("train", "val")):
            if counts[s] == 0:
                raise BigModelError(
                    f"dataset {recorded} has too few rows ({n}) for a {split} split with --val-fraction {vf}"
                )
        names = [("train", k) for k in range(len(firsts[0]) + 1)] + [
            ("val", k) for k in range(len(firsts[1]) + 1)
        ]
        shard = sf.when(sf.col(t.SPLIT) == 0, _count_le(firsts[0], 0, len(firsts[0]))).otherwise(
            len(firsts[0]) + 1 + _count_le(firsts[1], 0, len(firsts[1]))
        )
        phase("sort and write")
        with atomic_dir(dst) as tmp:
            root = str(tmp)
            written = [
                r.asDict()
                for r in enc.withColumn(t.SHARD, shard)
                .repartition(len(names), t.SHARD)
                .sortWithinPartitions(t.SHARD, t.K1, t.K2)
                .select(t.SHARD, *(t.x_col(j) for j in range(len(features))), t.Y)
                .mapInArrow(lambda it: t.write(it, root, schema, names, sizes), t.WRITTEN)
                .collect()
            ]
            manifest = _manifest(
                written,
                counts,
                features,
                label,
                values,
                task,
                regression,
                recorded,
                version,
                name,
                seed,
                vf,
                shuffle,
            )
            write_json_atomic(tmp / MANIFEST, manifest.model_dump(mode="json"))
    finally:
        enc.unpersist()
    return manifest


def _columns(
    df: Any, recorded: str, label: str, task: Task | None, infer_task: Any, nulls: frozenset[str]
) -> tuple[list[str], list[Any] | None, Task]:
    """(feature columns, sorted label values or None, task), checked as the local engine checks them."""
    if label not in df.columns:
        raise BigModelError(
            f"label column '{label}' not found in {recorded} (columns: {', '.join(df.columns)}); pass --label COL"
        )
    features = [c for c in df.columns if c != label]
    if not features:
        raise BigModelError(f"{recorded} has no feature columns besides the label '{label}'")
    types = {f.name: f.dataType for f in df.schema.fields}
    for f in features:
        if f.startswith("__bm_"):
            raise BigModelError(f"{recorded}: column '{f}' uses the prefix __bm_ that the Spark job reserves")
        t = _pa_type(types[f])
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise BigModelError(
                f"{recorded}: feature column '{f}' is not numeric ({types[f].simpleString()})"
            )
    label_type = _pa_type(types[label])
    if task is None and pa.types.is_floating(label_type):
        task = "regression"
    if task == "regression":
        if not (pa.types.is_integer(label_type) or pa.types.is_floating(label_type)):
            raise BigModelError(
                f"--task regression needs a numeric label column; '{label}' is {types[label].simpleString()}"
            )
        return features, None, task
    # One pass for the distinct values and the row count (infer_task weighs one against the other).
    found = df.groupBy(_col(label)).count().limit(_MAX_LABELS + 1).collect()  # O(classes)
    if any(r[0] is None or (isinstance(r[0], str) and r[0] in nulls) for r in found):
        raise BigModelError(f"label column '{label}' has missing values")
    if len(found) > _MAX_LABELS:
        raise BigModelError(
            f"label column '{label}' has over {_MAX_LABELS} distinct values; use --task regression"
        )
    values = sorted((r[0] for r in found), key=lambda v: (str(type(v)), v))
    if task is None:
        task = infer_task(label_type, values, sum(r[1] for r in found))
        if task == "regression":
            return features, None, task
    if len(values) < 2:
        raise BigModelError(f"label column '{label}' has a single value {values}: nothing to learn")
    if task == "binary" and len(values) != 2:
        raise BigModelError(f"--task binary needs 2 distinct labels in '{label}', found {len(values)}")
    assert task is not None
    return features, values, "binary" if len(values) == 2 else task


def _shard_starts(
    enc: Any, shuffle: bool, per: int, phase: Callable[[str], None]
) -> tuple[list[int], list[list[tuple[Any, int]]]]:
    """(rows per split, the (k1, k2) of each shard's first row after the split's first shard).
    Buckets are monotone in (k1, k2), so counting rows per bucket finds the bucket holding a given
    rank; only those buckets' keys come to the driver."""
    from pyspark.sql import functions as sf

    k1, k2 = sf.col(t.K1), sf.col(t.K2)
    # Shuffled: the order key is uniform, its top 16 bits make even buckets. In source order: per
    # file, runs of 4096 row ids (a partition's ids are consecutive).
    buckets = [sf.shiftright(k1, 48)] if shuffle else [k1, sf.shiftright(k2, 12)]
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


def _manifest(
    written: list[dict[str, Any]],
    counts: list[int],
    features: list[str],
    label: str,
    values: list[Any] | None,
    task: Task,
    regression: bool,
    recorded: str,
    version: int | None,
    name: str | None,
    seed: int,
    vf: float,
    shuffle: bool,
) -> Manifest:
    """The manifest from the shards' reports: train's files first, statistics merged in file order."""
    written.sort(key=lambda w: (not w["file"].startswith("train/"), w["file"]))
    for s, split in enumerate(("train", "val")):
        got = sum(w["rows"] for w in written if w["file"].startswith(f"{split}/"))
        if got != counts[s]:  # a lost or repeated task would show here; never commit it
            raise BigModelError(f"the Spark job wrote {got} {split} rows, expected {counts[s]}")
    xs, ys = shards.RunningStats(), shards.RunningStats()
    for w in written:
        xs.merge(w["n"], np.asarray(w["mean"], dtype=np.float64), np.asarray(w["m2"], dtype=np.float64))
        ys.merge(w["yn"], np.asarray(w["ymean"], dtype=np.float64), np.asarray(w["ym2"], dtype=np.float64))
    file_hashes = {w["file"]: w["sha256"] for w in written}
    content = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in file_hashes.items()).encode()).hexdigest()
    extra: dict[str, Any] = {}
    if regression:
        extra = dict(target_mean=float(ys.mean[0]), target_std=float(ys.std()[0]))
    return Manifest(
        name=name or (recorded.rstrip("/").rsplit("/", 1)[-1].split("@")[0] or "dataset"),
        source=recorded,
        source_version=version,
        task=task,
        features=features,
        label=label,
        label_values=values,
        seed=seed,
        val_fraction=vf,
        shuffled=shuffle,
        splits={
            s: Split(files=[w["file"] for w in written if w["file"].startswith(f"{s}/")], rows=counts[i])
            for i, s in enumerate(("train", "val"))
        },
        mean=[float(v) for v in xs.mean],
        std=[float(v) for v in xs.std()],
        content_hash=content,
        file_hashes=file_hashes,
        **extra,
    )
