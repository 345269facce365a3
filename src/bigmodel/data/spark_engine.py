"""``data prepare --engine spark``: the same shards + manifest as the local engine, written by Spark
executors, with no per-row Python objects (Arrow batches through ``mapInArrow``).

A row's split and place are functions of the row and the seed (``bigmodel.data.rowkey``): the rows
of a split sorted by ``(order key, row id)`` are the local engine's rows in the local engine's order.
This module is the driver's side of a table's job: it checks the columns and reads the label values
(one ``groupBy``, O(classes) to the driver), then has each Arrow batch checked as the local engine
checks it and encoded (split, sort key, float32 features, int64 class codes or float32 targets) by
``spark_tasks.encode``. ``spark_sort`` sorts and writes the shards; text (``--task lm``) takes the
same back half from ``spark_text``. The driver holds O(buckets + shards x features) and writes
``manifest.json``, then renames the temporary folder to DST. pyspark is imported only inside
functions: it is an optional extra.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from bigmodel.data import shards
from bigmodel.data import spark_tasks as t
from bigmodel.data.manifest import Manifest, Split, Task
from bigmodel.data.source import check_drop
from bigmodel.data.spark_session import first_line, inspect, is_spark_dataframe, load, session, stage_progress
from bigmodel.data.spark_sort import Report, sort_and_write
from bigmodel.data.spark_text import plan_text, run_text
from bigmodel.errors import BigModelError

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
    context: int = 256,
    shuffle: bool = True,
    drop: list[str] | None = None,
    master: str = "local[2]",
    conf: dict[str, str] | None = None,
    infer_task: Callable[[pa.DataType, list[Any], int], Task],
    progress: bool = False,
) -> Manifest:
    """Prepare ``src`` (a path, ``delta:`` table, or a pyspark DataFrame; with ``task="lm"`` text
    files, cut into rows of ``context + 1`` bytes) into ``dst`` on Spark.
    Same contract and, for the same rows, seed and split, the same shards and content hash as
    ``bigmodel.data.prepare`` with the local engine, which calls this (and passes its
    ``infer_task``, so both guess a task alike)."""
    from bigmodel.data.shards import check_seed

    if task == "lm" and is_spark_dataframe(src):
        raise BigModelError("--task lm on Spark reads text files: pass their path, not a DataFrame")
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
    source = text = None
    # Files, columns and label checked before a JVM starts (seconds, not a Spark start-up).
    if task == "lm":
        text = plan_text(str(src), context)
    elif not is_spark_dataframe(src):
        source = inspect(str(src))
        if source.schema is not None and label not in source.schema.names:
            raise BigModelError(
                f"label column '{label}' not found in {source.recorded} "
                f"(columns: {', '.join(source.schema.names)}); pass --label COL"
            )
        if source.schema is not None:
            check_drop(drop or [], source.schema.names, source.recorded)
    spark = src.sparkSession if is_spark_dataframe(src) else session(master, conf or {})
    try:
        if text is not None:
            with stage_progress(spark, progress) as phase:
                return run_text(
                    spark, text, dst, seed=seed, vf=val_fraction, name=name, shuffle=shuffle, phase=phase
                )
        df = src if source is None else load(spark, source)
        if drop:
            columns = [c for c in df.columns if c != t.FILE]
            check_drop(drop, columns, source.recorded if source is not None else "the DataFrame")
            df = df.drop(*drop)
        # the local engine's CSV reader reads "NA", "null", "nan" ... as missing, in a text column too
        nulls = _NULLS if source is not None and source.csv_sep is not None else frozenset()
        origin = (source.recorded, source.delta_version) if source is not None else ("spark-dataframe", None)
        with stage_progress(spark, progress) as phase:
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
    from pyspark.sql import functions as sf

    phase("labels")
    features, values, task = _columns(df, recorded, label, task, infer_task, nulls)
    regression = task == "regression"
    schema = t.shard_schema(features, label, regression)
    cols = [*features, label]
    if not shuffle:  # the source order: file by file, then the order rows were read in
        if t.FILE not in df.columns:  # a partitioned Delta table has it from its scan already
            df = df.withColumn(t.FILE, sf.input_file_name())
        cols.append(t.FILE)
    enc_schema = t.encoded_schema(len(features), regression, shuffle)
    enc = (
        # by position: pyspark's mapInArrow looks its input columns up by name, and a name with a
        # backtick (legal in CSV and Parquet) does not parse there
        df.select(*(_col(c).alias(f"__bm_in{i}__") for i, c in enumerate(cols))).mapInArrow(
            lambda it: t.encode(it, label, features, values, seed, vf, shuffle), enc_schema
        )
    )
    # Shuffled: the order key is uniform, its top 16 bits make even buckets. In source order: per
    # file, runs of 4096 row ids (a partition's ids are consecutive).
    k1, k2 = sf.col(t.K1), sf.col(t.K2)
    buckets = [sf.shiftright(k1, 48)] if shuffle else [k1, sf.shiftright(k2, 12)]
    sizes = (shards.ROW_GROUP_ROWS, shards.SHARD_ROWS)  # read now: tests lower them

    def manifest_of(written: Report, counts: list[int]) -> Manifest:
        return _manifest(
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

    return sort_and_write(enc, dst, buckets, schema, sizes, recorded, vf, phase, manifest_of)


def _columns(
    df: Any, recorded: str, label: str, task: Task | None, infer_task: Any, nulls: frozenset[str]
) -> tuple[list[str], list[Any] | None, Task]:
    """(feature columns, sorted label values or None, task), checked as the local engine checks them."""
    if label not in df.columns:
        raise BigModelError(
            f"label column '{label}' not found in {recorded} (columns: {', '.join(df.columns)}); pass --label COL"
        )
    features = [c for c in df.columns if c not in (label, t.FILE)]
    if not features:
        raise BigModelError(f"{recorded} has no feature columns besides the label '{label}'")
    types = {f.name: f.dataType for f in df.schema.fields}
    for f in features:
        if f.startswith("__bm_"):
            raise BigModelError(f"{recorded}: column '{f}' uses the prefix __bm_ that the Spark job reserves")
        kind = _pa_type(types[f])
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
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


def _manifest(
    written: Report,
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
    """The manifest from the shards' reports (train's files first): statistics merged in file order."""
    xs, ys = shards.RunningStats(), shards.RunningStats()
    for w in written:
        xs.merge(w["n"], np.asarray(w["mean"], dtype=np.float64), np.asarray(w["m2"], dtype=np.float64))
        ys.merge(w["yn"], np.asarray(w["ymean"], dtype=np.float64), np.asarray(w["ym2"], dtype=np.float64))
    file_hashes = {w["file"]: w["sha256"] for w in written}
    content = shards.content_hash(file_hashes)
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
