"""``data prepare --engine spark``: the same shards + manifest as the local engine, written by Spark
executors.

The row order and split are functions of each row and the seed (``bigmodel.data.rowkey``), so a
global sort by ``(split, key)`` gives the local engine's rows in the local engine's order. Each row's
rank within its split says which shard file it belongs to; each shard is then written by one
executor task with the local engine's own ``_SplitWriter``, so the files (and the content hash) are
byte-identical. The driver collects only O(partitions x features) statistics, O(classes) labels and
O(shards) file hashes; it writes ``manifest.json`` and renames the temporary folder to DST last.
pyspark is imported only here, and only when this engine runs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bigmodel.data import rowkey, shards
from bigmodel.data.manifest import MANIFEST, Manifest, Split, Task
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_dir, write_json_atomic


def is_spark_dataframe(obj: object) -> bool:
    """Whether ``obj`` is a pyspark DataFrame, without importing pyspark (it may not be installed)."""
    return any(
        c.__module__.startswith("pyspark.sql") and c.__name__ == "DataFrame" for c in type(obj).__mro__
    )


def check_java() -> None:
    """Spark needs a JVM: one line saying how to get one, before pyspark tries and prints pages."""
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").is_file():
        return
    if shutil.which("java"):
        return
    raise BigModelError(
        "--engine spark needs Java 17+ and none was found (JAVA_HOME unset or wrong, no java on PATH); "
        "install it (e.g. apt-get install openjdk-17-jre-headless) or use --engine local"
    )


def check_master(master: str) -> None:
    """A standalone master that does not answer fails in seconds, not after Spark's minute of retries."""
    m = re.fullmatch(r"spark://([^:/]+):(\d+)", master)
    if not m:
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=5).close()
    except OSError as err:
        raise BigModelError(f"cannot reach Spark master {master}: {err.strerror or err}") from None


def session(master: str, conf: dict[str, str]) -> Any:
    """A Spark session on ``master`` with ``conf`` (``--spark-conf key=value``)."""
    check_java()
    check_master(master)
    from pyspark.sql import SparkSession

    # Python workers run this interpreter, which has bigmodel (the executors call into it).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    builder = SparkSession.builder.master(master).appName("bigmodel data prepare")
    for k, v in {"spark.ui.enabled": "false", **conf}.items():
        builder = builder.config(k, v)
    try:
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
    except Exception as err:  # a JVM that cannot start, a master that refuses the app
        raise BigModelError(f"cannot start Spark on {master}: {_first_line(err)}") from None
    if spark.sparkContext.master != master:  # getOrCreate hands back a running session as it is
        raise BigModelError(
            f"a Spark session on {spark.sparkContext.master} is already running in this process; "
            f"pass its DataFrame to prepare(), or stop it to use --master {master}"
        )
    return spark


def _first_line(err: BaseException) -> str:
    found = re.search(r"BigModelError: (.*)", str(err))
    if found:
        return found.group(1).strip()
    return next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)


def read(spark: Any, src: str) -> tuple[Any, str, int | None]:
    """(DataFrame, source as recorded, Delta version or None) for a file, folder or ``delta:`` table.
    Every file must have the same columns: Spark would otherwise align them silently by position."""
    from bigmodel.data import delta, source

    if delta.is_delta(src):
        snap = delta.snapshot(src)
        if not snap.files:
            raise BigModelError(f"{snap.uri} is empty: no data files")
        return spark.read.parquet(*snap.files), snap.uri, snap.version
    fs, files = source.list_files(src)
    first, schema = source.first_schema(fs, files, src)
    for f in files:
        names = source.first_schema(fs, [f], f)[1].names
        if names != schema.names:
            raise BigModelError(f"{f}: columns {names} differ from {schema.names} in {first}")
    csv = [f.lower().endswith((".csv", ".tsv", ".csv.gz")) for f in files]
    if any(csv) and not all(csv):
        raise BigModelError(f"{src} mixes CSV and Parquet files; --engine spark reads one format")
    paths = [fs.unstrip_protocol(f) if not src.startswith("/") else f for f in files]
    if all(csv):
        sep = "\t" if files[0].lower().endswith(".tsv") else ","
        return spark.read.csv(paths, header=True, inferSchema=True, sep=sep), src, None
    return spark.read.parquet(*paths), src, None


_FILE, _ROW = "__bigmodel_file__", "__bigmodel_row__"  # no-shuffle: the source order


def _pa_type(spark_type: Any) -> pa.DataType:
    name = type(spark_type).__name__
    if name in ("DoubleType", "FloatType", "DecimalType"):
        return pa.float64()
    if name in ("LongType", "IntegerType", "ShortType", "ByteType"):
        return pa.int64()
    if name == "BooleanType":
        return pa.bool_()
    return pa.string() if name == "StringType" else pa.null()


def _encode(
    rows: Any,
    label: str,
    features: list[str],
    codes: dict[Any, int] | None,
    seed: int,
    vf: float,
    shuffle: bool,
    chunk: int = 65536,
) -> Any:
    """Executor side: rows -> ((split, key), packed row bytes), with the local engine's checks."""
    buf: list[Any] = []

    def flush() -> Any:
        x = np.array([[r[f] for f in features] for r in buf], dtype=np.float64)  # None -> nan
        if not np.isfinite(x).all():
            j = int(np.flatnonzero(~np.isfinite(x).all(axis=0))[0])
            raise BigModelError(f"feature column '{features[j]}' has a missing, NaN or infinite value")
        xf = x.astype(np.float32)
        raw = [r[label] for r in buf]
        if any(v is None for v in raw):
            raise BigModelError(f"label column '{label}' has missing values")
        if codes is None:
            y = np.array(raw, dtype=np.float64).astype(np.float32)
            if not np.isfinite(y).all():
                raise BigModelError(f"label column '{label}' has a NaN or infinite value")
        else:
            y = np.array([codes[v] for v in raw], dtype=np.int64)
        val = rowkey.is_val(xf, y, seed, vf)
        keys = rowkey.order_key(xf, y, seed).tolist() if shuffle else [(r[_FILE], r[_ROW]) for r in buf]
        packed = np.concatenate(
            [xf.view(np.uint8).reshape(len(xf), -1), y.astype(y.dtype).view(np.uint8).reshape(len(y), -1)],
            axis=1,
        )
        for i in range(len(buf)):
            yield (int(val[i]), keys[i]), packed[i].tobytes()

    for r in rows:
        buf.append(r)
        if len(buf) == chunk:
            yield from flush()
            buf = []
    if buf:
        yield from flush()


def _stats(index: int, pairs: Any, features: int, regression: bool) -> Any:
    """Executor side: one partition's training-split (n, mean, M2) for X (and y), float64."""
    xs = shards.RunningStats()
    ys = shards.RunningStats()
    block: list[bytes] = []

    def add() -> None:
        raw = np.frombuffer(b"".join(block), dtype=np.uint8).reshape(len(block), -1)
        xs.update(raw[:, : 4 * features].copy().view(np.float32))
        if regression:
            ys.update(raw[:, 4 * features :].copy().view(np.float32)[:, 0])

    n_val = 0
    for (split, _), row in pairs:
        if split:
            n_val += 1
            continue
        block.append(row)
        if len(block) == 65536:
            add()
            block = []
    if block:
        add()
    yield index, xs.n, xs.mean.tolist(), xs.m2.tolist(), ys.n, ys.mean.tolist(), ys.m2.tolist(), n_val


def _merge(parts: list[Any]) -> tuple[shards.RunningStats, shards.RunningStats, int]:
    """Chan et al.'s merge of per-partition statistics, in partition order (a fixed order)."""
    xs, ys, n_val = shards.RunningStats(), shards.RunningStats(), 0
    for _, n, mean, m2, yn, ymean, ym2, v in sorted(parts, key=lambda p: p[0]):
        n_val += v
        for acc, k, mu, s2 in ((xs, n, mean, m2), (ys, yn, ymean, ym2)):
            acc.merge(k, np.asarray(mu, dtype=np.float64), np.asarray(s2, dtype=np.float64))
    return xs, ys, n_val


def _write_shard(
    rows: Any,
    root: str,
    schema: pa.Schema,
    features: int,
    regression: bool,
    ordinal: int,
    names: list[tuple[str, int]],
    sizes: tuple[int, int],
) -> Any:
    """Executor side: the rows of one shard (sorted by rank) through the local engine's writer."""
    split, first = names[ordinal]
    label_dtype = np.float32 if regression else np.int64
    w = shards._SplitWriter(Path(root), split, schema, *sizes, first)
    block: list[bytes] = []

    def add() -> None:
        raw = np.frombuffer(b"".join(block), dtype=np.uint8).reshape(len(block), -1)
        x = raw[:, : 4 * features].copy().view(np.float32)
        y = raw[:, 4 * features :].copy().view(label_dtype)[:, 0]
        cols = [pa.array(x[:, j]) for j in range(features)] + [pa.array(y)]
        w.add(pa.RecordBatch.from_arrays(cols, schema=schema))

    try:
        for _, row in rows:
            block.append(row)
            if len(block) == sizes[0]:
                add()
                block = []
        if block:
            add()
        w.close()
    except BaseException:
        w.abort()
        raise
    for f in w.files:
        h = hashlib.sha256()
        with open(Path(root) / f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        yield f, h.hexdigest(), w.rows


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
    version = None
    if is_spark_dataframe(src):
        df, recorded = src, "spark-dataframe"
    else:
        recorded = str(src)
        df, recorded, version = read(session(master, conf or {}), recorded)
    try:
        return _run(df, dst, recorded, version, label, val_fraction, seed, task, name, shuffle, infer_task)
    except BigModelError:
        raise
    except Exception as err:  # a Py4J or executor failure: one line, the BigModelError inside if any
        raise BigModelError(f"spark job failed: {_first_line(err)}") from None


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
) -> Manifest:
    from pyspark.sql import functions as sf

    if label not in df.columns:
        raise BigModelError(
            f"label column '{label}' not found in {recorded} (columns: {', '.join(df.columns)}); pass --label COL"
        )
    features = [c for c in df.columns if c != label]
    if not features:
        raise BigModelError(f"{recorded} has no feature columns besides the label '{label}'")
    types = {f.name: f.dataType for f in df.schema.fields}
    for f in features:
        if (
            not pa.types.is_integer(_pa_type(types[f]))
            and not pa.types.is_floating(_pa_type(types[f]))
            and not pa.types.is_boolean(_pa_type(types[f]))
        ):
            raise BigModelError(
                f"{recorded}: feature column '{f}' is not numeric ({types[f].simpleString()})"
            )
    label_type = _pa_type(types[label])
    values: list[Any] | None = None
    if task is None and pa.types.is_floating(label_type):
        task = "regression"
    if task != "regression":
        found = [r[0] for r in df.select(label).distinct().limit(10001).collect()]  # O(classes)
        if any(v is None for v in found):
            raise BigModelError(f"label column '{label}' has missing values")
        if len(found) > 10000:
            raise BigModelError(
                f"label column '{label}' has over 10000 distinct values; use --task regression"
            )
        values = sorted(found, key=lambda v: (str(type(v)), v))
        if task is None:
            task = infer_task(label_type, values, df.count())
            if task == "regression":
                values = None
    if values is not None:
        if len(values) < 2:
            raise BigModelError(f"label column '{label}' has a single value {values}: nothing to learn")
        if task == "binary" and len(values) != 2:
            raise BigModelError(f"--task binary needs 2 distinct labels in '{label}', found {len(values)}")
        if len(values) == 2:
            task = "binary"
    assert task is not None
    regression = task == "regression"
    codes = {v: i for i, v in enumerate(values)} if values is not None else None
    cols = [*features, label]
    if not shuffle:  # the source order: file by file, then the order rows were read in
        df = df.withColumn(_FILE, sf.input_file_name()).withColumn(_ROW, sf.monotonically_increasing_id())
        cols += [_FILE, _ROW]
    F = len(features)
    pairs = df.select(*cols).rdd.mapPartitions(
        lambda rows: _encode(rows, label, features, codes, seed, vf, shuffle)
    )
    from pyspark import StorageLevel

    # Computed once, kept on the executors' disks (bounded memory) for the sort's passes.
    pairs.persist(StorageLevel.DISK_ONLY)
    parts = pairs.mapPartitionsWithIndex(lambda i, it: _stats(i, it, F, regression)).collect()
    xs, ys, n_val = _merge(parts)
    counts = {"train": xs.n, "val": n_val}
    if xs.n + n_val == 0:
        raise BigModelError(f"dataset {recorded} is empty: no rows")
    for split, n in counts.items():
        if n == 0:
            raise BigModelError(
                f"dataset {recorded} has too few rows ({xs.n + n_val}) for a {split} split with --val-fraction {vf}"
            )
    # Shard ordinals: train's shards first, then val's; the rank within a split picks the shard.
    # Read here, on the driver, and shipped to the tasks: the local engine's layout exactly.
    sizes = (shards.ROW_GROUP_ROWS, shards.SHARD_ROWS)
    per = sizes[1]
    names = [("train", k) for k in range(-(-xs.n // per))] + [("val", k) for k in range(-(-n_val // per))]
    n_train_shards = -(-xs.n // per)
    ranked = pairs.sortByKey().zipWithIndex()  # global rank: train rows (split 0) first

    def place(item: Any) -> Any:
        ((split, _), row), rank = item
        at = rank - (counts["train"] if split else 0)
        return (n_train_shards * split + at // per, at), row

    schema = _schema(features, label, regression)
    written: list[Any] = []
    with atomic_dir(dst) as tmp:
        root = str(tmp)
        written = (
            ranked.map(place)
            .repartitionAndSortWithinPartitions(len(names), partitionFunc=lambda k: k[0])
            .mapPartitionsWithIndex(
                lambda i, it: _write_shard(it, root, schema, F, regression, i, names, sizes)
            )
            .collect()
        )
        written.sort(key=lambda w: (not w[0].startswith("train/"), w[0]))
        file_hashes = {f: h for f, h, _ in written}
        content = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in file_hashes.items()).encode()).hexdigest()
        extra: dict[str, Any] = {}
        if regression:
            extra = dict(target_mean=float(ys.mean), target_std=float(ys.std()))
        manifest = Manifest(
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
                s: Split(files=[f for f, _, _ in written if f.startswith(f"{s}/")], rows=counts[s])
                for s in ("train", "val")
            },
            mean=[float(v) for v in xs.mean],
            std=[float(v) for v in xs.std()],
            content_hash=content,
            file_hashes=file_hashes,
            **extra,
        )
        write_json_atomic(tmp / MANIFEST, manifest.model_dump(mode="json"))
    pairs.unpersist()
    return manifest


def _schema(features: list[str], label: str, regression: bool) -> pa.Schema:
    """The local engine's shard schema (``ShardWriter``): required float32 features and label."""
    label_type = pa.float32() if regression else pa.int64()
    fields = [pa.field(f, pa.float32(), nullable=False) for f in features]
    return pa.schema([*fields, pa.field(label, label_type, nullable=False)])
