"""The executor side of ``data prepare --engine spark``: what runs inside ``mapInArrow`` on Arrow
batches (checking and encoding source rows; writing a shard with the local engine's writer) and the
schemas both sides agree on. Module-level functions, so Spark pickles them by reference."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bigmodel.data import rowkey, shards
from bigmodel.errors import BigModelError

# What the job adds to each row: split (0 train, 1 val), sort key (k1, k2), shard; the source file.
SPLIT, K1, K2, SHARD, FILE = "__bm_split__", "__bm_k1__", "__bm_k2__", "__bm_shard__", "__bm_file__"
FLIP = np.uint64(1 << 63)  # u ^ 2**63 read as int64 sorts as u does unsigned: Spark has no uint64


def x_col(j: int) -> str:
    return f"__bm_x{j}__"


Y = "__bm_y__"


def encode(
    batches: Iterator[pa.RecordBatch],
    label: str,
    features: list[str],
    values: list[Any] | None,
    seed: int,
    vf: float,
    shuffle: bool,
) -> Iterator[pa.RecordBatch]:
    """Executor side: source batches -> (split, k1, float32 features, label code or target), with
    the local engine's checks. k1 is the order key, or the source file name with ``--no-shuffle``."""
    value_set = None
    for b in batches:
        n = b.num_rows
        if n == 0:
            continue
        x = np.empty((n, len(features)), dtype=np.float64)  # (n, F)
        for j in range(len(features)):
            # safe=False: an int64 past 2**53 rounds, as numpy's cast does on the local engine
            x[:, j] = pc.cast(b.column(j), pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        finite = np.isfinite(x).all(axis=0)
        if not finite.all():
            bad = features[int(np.flatnonzero(~finite)[0])]
            raise BigModelError(f"feature column '{bad}' has a missing, NaN or infinite value")
        xf = x.astype(np.float32)
        lab = b.column(len(features))
        if lab.null_count:
            raise BigModelError(f"label column '{label}' has missing values")
        if values is None:
            y = pc.cast(lab, pa.float64(), safe=False).to_numpy(zero_copy_only=False).astype(np.float32)
            if not np.isfinite(y).all():
                raise BigModelError(f"label column '{label}' has a NaN or infinite value")
        else:
            if value_set is None:
                value_set = pa.array(values, type=lab.type)
            codes = pc.index_in(lab, value_set=value_set)
            if codes.null_count:  # the values were read from this same source: it changed under us
                raise BigModelError(f"label column '{label}' has a value not among {values[:10]}")
            y = codes.to_numpy(zero_copy_only=False).astype(np.int64)  # (n,)
        out: dict[str, Any] = {SPLIT: pa.array(rowkey.is_val(xf, y, seed, vf).astype(np.int32))}
        if shuffle:
            out[K1] = pa.array((rowkey.order_key(xf, y, seed) ^ FLIP).view(np.int64))
        else:
            out[K1] = file_names(b.column(len(features) + 1))
        for j in range(len(features)):
            out[x_col(j)] = pa.array(xf[:, j])
        out[Y] = pa.array(y)
        yield pa.RecordBatch.from_pydict(out)


def file_names(uris: pa.Array) -> pa.Array:
    """Spark's ``input_file_name`` URIs as the paths they name ("a%20b.csv" -> "a b.csv"): the
    local engine orders files by path, and "%20" sorts before "!"."""
    from urllib.parse import unquote

    coded = pc.dictionary_encode(uris)  # a batch holds a file or two: decode each name once
    names = pa.array([unquote(u) for u in coded.dictionary.to_pylist()], type=pa.string())
    return pa.DictionaryArray.from_arrays(coded.indices, names).dictionary_decode()


WRITTEN_ARROW = pa.schema(
    [
        ("file", pa.string()),
        ("sha256", pa.string()),
        ("rows", pa.int64()),
        ("n", pa.int64()),
        ("mean", pa.list_(pa.float64())),
        ("m2", pa.list_(pa.float64())),
        ("yn", pa.int64()),
        ("ymean", pa.list_(pa.float64())),
        ("ym2", pa.list_(pa.float64())),
    ]
)
WRITTEN = (
    "file string, sha256 string, rows long, n long, mean array<double>, m2 array<double>, "
    "yn long, ymean array<double>, ym2 array<double>"
)


def write(
    batches: Iterator[pa.RecordBatch],
    root: str,
    schema_ipc: bytes,
    names: list[tuple[str, int]],
    sizes: tuple[int, int],
) -> Iterator[pa.RecordBatch]:
    """Executor side: rows sorted by (shard, key) -> one Parquet file per shard through the local
    engine's writer; yields per shard its file, hash, rows and training statistics. The shards'
    schema comes as Arrow IPC bytes: a pickled schema loses a list's non-nullable items (pyarrow
    26), and the files would then differ from the local engine's."""
    schema = pa.ipc.read_schema(pa.py_buffer(schema_ipc))
    lm = pa.types.is_fixed_size_list(schema.field(0).type)  # text: one column of byte rows
    features, label = schema.names[:-1], schema.names[-1]
    regression = pa.types.is_floating(schema.field(label).type)
    done: list[dict[str, Any]] = []
    state: dict[str, Any] = {}

    def finish() -> None:
        w, xs, ys = state.pop("w"), state.pop("xs"), state.pop("ys")
        w.close()
        for f in w.files:
            h = hashlib.sha256()
            with open(Path(root) / f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            done.append(
                dict(
                    file=f,
                    sha256=h.hexdigest(),
                    rows=w.rows,
                    n=xs.n,
                    mean=xs.mean.tolist(),
                    m2=xs.m2.tolist(),
                    yn=ys.n,
                    ymean=np.atleast_1d(ys.mean).tolist(),
                    ym2=np.atleast_1d(ys.m2).tolist(),
                )
            )

    try:
        for b in batches:
            shard = b.column(SHARD).to_numpy(zero_copy_only=False)  # (n,) non-decreasing
            cuts = [0, *(np.flatnonzero(np.diff(shard)) + 1).tolist(), b.num_rows]
            for lo, hi in itertools.pairwise(cuts):
                if hi == lo:
                    continue
                if state.get("shard") != int(shard[lo]):
                    if "w" in state:
                        finish()
                    split, first = names[int(shard[lo])]
                    w = shards._SplitWriter(Path(root), split, schema, *sizes, first)
                    state.update(
                        shard=int(shard[lo]), w=w, xs=shards.RunningStats(), ys=shards.RunningStats()
                    )
                cols = [b.column(1 + j).slice(lo, hi - lo) for j in range(len(schema))]
                if lm:
                    cols = [_token_rows(cols[0], schema.field(0).type)]
                part = pa.RecordBatch.from_arrays(cols, schema=schema)
                state["w"].add(part)
                if names[state["shard"]][0] == "train" and not lm:
                    state["xs"].update(np.column_stack([part.column(f).to_numpy() for f in features]))
                    if regression:
                        state["ys"].update(part.column(label).to_numpy())
        if "w" in state:
            finish()
    except BaseException:
        if "w" in state:
            state["w"].abort()
        raise
    if done:
        yield pa.RecordBatch.from_pylist(done, schema=WRITTEN_ARROW)


def _token_rows(rows: pa.Array, kind: pa.DataType) -> pa.FixedSizeListArray:
    """Spark's binary cells of one length (``BinaryType``) as the shards' fixed-size byte lists,
    without a Python object per row: the cells' bytes lie end to end in the data buffer."""
    wide = pa.types.is_large_binary(rows.type)  # as Spark sends it with arrow.useLargeVarTypes
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64 if wide else np.int32)
    offsets = offsets[rows.offset : rows.offset + len(rows) + 1]
    data = np.frombuffer(rows.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    if len(data) != len(rows) * kind.list_size:
        raise BigModelError(
            f"text rows of {kind.list_size} bytes expected, got {len(data)} bytes in {len(rows)}"
        )
    return pa.FixedSizeListArray.from_arrays(pa.array(data), type=kind)


def shard_schema(features: list[str], label: str, regression: bool) -> pa.Schema:
    """The local engine's shard schema (``ShardWriter``): required float32 features and label."""
    label_type = pa.float32() if regression else pa.int64()
    fields = [pa.field(f, pa.float32(), nullable=False) for f in features]
    return pa.schema([*fields, pa.field(label, label_type, nullable=False)])


def encoded_schema(n_features: int, regression: bool, shuffle: bool) -> Any:
    """The encoded rows' Spark schema: split, k1 (order key, or source file), features, label
    (named by position: the shards' schema holds the real names)."""
    from pyspark.sql import types as T

    return T.StructType(
        [
            T.StructField(SPLIT, T.IntegerType(), False),
            T.StructField(K1, T.LongType() if shuffle else T.StringType(), False),
            *[T.StructField(x_col(j), T.FloatType(), False) for j in range(n_features)],
            T.StructField(Y, T.FloatType() if regression else T.LongType(), False),
        ]
    )
