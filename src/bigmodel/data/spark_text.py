"""``data prepare --task lm --engine spark``: text files become byte rows on the executors, and the
same shards, manifest and content hash as the local engine (``bigmodel.data.text``).

The local engine lays the files end to end (each followed by a newline) and cuts the stream into
rows of ``context + 1`` bytes with a stride of ``context``. Row r is bytes ``[r*context,
r*context + context + 1)`` of that stream, so the driver needs only the files' sizes (O(files))
to hand each task a range of rows; a task reads its bytes with plain file reads, crossing file
boundaries as the stream does, and cuts them into rows. Split and order are hashes of each row's
bytes (``rowkey.tokens_is_val``, ``tokens_order_key``); in source order the key is the row's index.
``spark_sort`` then sorts and writes the shards as for tables.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bigmodel.data import rowkey, shards
from bigmodel.data import spark_tasks as t
from bigmodel.data.manifest import Manifest, Split
from bigmodel.data.spark_sort import Report, sort_and_write
from bigmodel.data.text import check_context, cut_rows, lm_row_group_rows, text_source
from bigmodel.errors import BigModelError

TOKENS = "__bm_tokens__"  # a row's context + 1 bytes, as Spark's BinaryType
_TASK_BYTES = 64 << 20  # text read by one task
_CHUNK_ROWS = 8192  # rows cut and encoded at a time within a task (~2 MB at context 256)


@dataclass(frozen=True)
class TextPlan:
    """The text files of a source as one stream of bytes, and the rows it will be cut into."""

    src: str
    files: list[str]  # local paths, in stream order
    starts: list[int]  # each file's first byte in the stream
    sizes: list[int]  # each file's bytes (a newline follows each in the stream)
    context: int

    @property
    def length(self) -> int:
        return self.starts[-1] + self.sizes[-1] + 1

    @property
    def rows(self) -> int:
        return (self.length - 1) // self.context if self.length > self.context else 0


def plan_text(src: str, context: int) -> TextPlan:
    """The files ``src`` names (as the local engine lists them) and their sizes: no Spark yet."""
    check_context(context)
    fs, paths = text_source(src)
    sizes = [int(fs.size(p) or 0) for p in paths]
    starts = [0, *np.cumsum([s + 1 for s in sizes[:-1]]).tolist()]
    return TextPlan(src, paths, starts, sizes, context)


def read_span(plan: TextPlan, a: int, b: int) -> bytes:
    """Bytes ``[a, b)`` of the stream: the files' bytes, a newline after each."""
    out = []
    i = bisect.bisect_right(plan.starts, a) - 1
    while a < b:
        start, size = plan.starts[i], plan.sizes[i]
        end = start + size  # the newline after file i
        if a < end:
            want = min(b, end) - a
            with open(plan.files[i], "rb") as f:
                f.seek(a - start)
                got = f.read(want)
            if len(got) != want:
                raise BigModelError(f"{plan.files[i]} changed while it was read (it had {size} bytes)")
            out.append(got)
            a += want
        if a == end and a < b:
            out.append(b"\n")
            a += 1
        i += 1
    return b"".join(out)


def encode_text(
    batches: Iterator[pa.RecordBatch], plan: TextPlan, per_task: int, seed: int, vf: float, shuffle: bool
) -> Iterator[pa.RecordBatch]:
    """Executor side: task ids -> the rows of each task's range as (split, k1, tokens). k1 is the
    order key, or the row's index in the text with ``--no-shuffle``."""
    c = plan.context
    for b in batches:
        for task in b.column(0).to_numpy().tolist():
            lo, hi = task * per_task, min(plan.rows, (task + 1) * per_task)
            for a in range(lo, hi, _CHUNK_ROWS):
                z = min(hi, a + _CHUNK_ROWS)
                tokens = cut_rows(read_span(plan, a * c, z * c + 1), c)  # (z - a, c + 1)
                n = len(tokens)
                if shuffle:
                    k1 = (rowkey.tokens_order_key(tokens, seed) ^ t.FLIP).view(np.int64)
                else:
                    k1 = np.arange(a, z, dtype=np.int64)
                offsets = np.arange(n + 1, dtype=np.int32) * (c + 1)
                cells = pa.Array.from_buffers(
                    pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(tokens.tobytes())]
                )
                split = rowkey.tokens_is_val(tokens, seed, vf).astype(np.int32)
                yield pa.RecordBatch.from_pydict(
                    {t.SPLIT: pa.array(split), t.K1: pa.array(k1), TOKENS: cells}
                )


def run_text(
    spark: Any,
    plan: TextPlan,
    dst: Path,
    *,
    seed: int,
    vf: float,
    name: str | None,
    shuffle: bool,
    phase: Callable[[str], None],
) -> Manifest:
    """The driver's side of a text job: tasks over row ranges, then ``spark_sort``."""
    from pyspark.sql import functions as sf
    from pyspark.sql import types as T

    c = plan.context
    empty = f" (text needs more than --context {c} bytes for one row)"
    if plan.rows == 0:
        raise BigModelError(f"dataset {plan.src} is empty: no rows{empty}")
    tasks = max(spark.sparkContext.defaultParallelism, math.ceil(plan.length / _TASK_BYTES))
    per_task = math.ceil(plan.rows / min(tasks, plan.rows))
    tasks = math.ceil(plan.rows / per_task)
    schema = T.StructType(
        [
            T.StructField(t.SPLIT, T.IntegerType(), False),
            T.StructField(t.K1, T.LongType(), False),
            T.StructField(TOKENS, T.BinaryType(), False),
        ]
    )
    enc = spark.range(0, tasks, 1, numPartitions=tasks).mapInArrow(
        lambda it: encode_text(it, plan, per_task, seed, vf, shuffle), schema
    )
    # Shuffled: the order key's top 16 bits make even buckets; in text order, runs of 4096 rows.
    k1 = sf.col(t.K1)
    buckets = [sf.shiftright(k1, 48 if shuffle else 12)]
    out_schema = shards.lm_schema(c)
    sizes = (lm_row_group_rows(c), shards.SHARD_ROWS)

    def manifest_of(written: Report, counts: list[int]) -> Manifest:
        file_hashes = {w["file"]: w["sha256"] for w in written}
        return Manifest(
            name=name or Path(plan.src.rstrip("/")).name,
            source=plan.src,
            task="lm",
            features=[shards.TOKENS],
            label=shards.TOKENS,
            label_values=None,
            seed=seed,
            val_fraction=vf,
            shuffled=shuffle,
            context=c,
            vocab=256,
            splits={
                s: Split(files=[w["file"] for w in written if w["file"].startswith(f"{s}/")], rows=counts[i])
                for i, s in enumerate(("train", "val"))
            },
            mean=[],
            std=[],
            content_hash=shards.content_hash(file_hashes),
            file_hashes=file_hashes,
        )

    return sort_and_write(enc, dst, buckets, out_schema, sizes, plan.src, vf, phase, manifest_of, empty)
