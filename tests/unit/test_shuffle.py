from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import bigmodel.data.shuffle as shuffle
from bigmodel.data.rowkey import order_key
from bigmodel.data.shuffle import BucketShuffle
from tests.conftest import open_files

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False)])


def _keys(ids: np.ndarray, seed: int) -> np.ndarray:
    return order_key(ids[:, None].astype(np.float32), np.zeros(len(ids), np.int64), seed)


def _feed(s: BucketShuffle, rows: int, chunk: int = 1000, seed: int = 0) -> None:
    for at in range(0, rows, chunk):
        ids = np.arange(at, min(rows, at + chunk))
        s.add(pa.record_batch([pa.array(ids)], schema=SCHEMA), _keys(ids, seed))


def _ids(s: BucketShuffle) -> np.ndarray:
    return np.concatenate([b.column(0).to_numpy() for b in s.drain()])


@pytest.mark.parametrize("buckets", [1, 3])
def test_every_row_comes_out_once_in_a_seeded_random_order(tmp_path: Path, buckets: int):
    orders = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        s = BucketShuffle(tmp_path / name, SCHEMA, buckets)
        _feed(s, 5000, seed=seed)
        orders.append(_ids(s))
        assert not (tmp_path / name).exists()  # drained: the bucket files are gone
    a, b, c = orders
    assert sorted(a.tolist()) == list(range(5000))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert abs(np.corrcoef(a, np.arange(5000))[0, 1]) < 0.1


def test_a_bucket_bigger_than_guessed_is_split_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(shuffle, "BUCKET_BYTES", 4 << 10)
    splits = []
    reshuffle = BucketShuffle._split_again
    monkeypatch.setattr(
        BucketShuffle, "_split_again", lambda self, *a: splits.append(a[0]) or reshuffle(self, *a)
    )
    s = BucketShuffle(tmp_path / "b", SCHEMA, 1)  # 1 bucket for ~40 KB of rows
    _feed(s, 5000)
    ids = _ids(s)
    assert splits == [0]  # pass 2 found the one bucket too big and shuffled it in sub-buckets
    assert sorted(ids.tolist()) == list(range(5000))
    assert abs(np.corrcoef(ids, np.arange(5000))[0, 1]) < 0.1
    assert not (tmp_path / "b").exists()


def test_abort_closes_and_removes_every_bucket(tmp_path: Path):
    s = BucketShuffle(tmp_path / "b", SCHEMA, 4)
    _feed(s, 100)
    s.abort()
    assert not (tmp_path / "b").exists()
    assert not [f for f in open_files() if ".arrows" in f]


def test_a_keyed_shuffle_gives_key_order_whatever_the_buckets_and_batching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    ids = np.arange(20000)
    keys = _keys(ids, 3)
    want = ids[np.argsort(keys)]
    monkeypatch.setattr(shuffle, "BUCKET_BYTES", 16 << 10)  # forces buckets to be split again
    for name, buckets, chunk in (("a", 1, 20000), ("b", 3, 777), ("c", 7, 5000)):
        s = BucketShuffle(tmp_path / name, SCHEMA, buckets)
        for at in range(0, len(ids), chunk):
            part = ids[at : at + chunk]
            s.add(pa.record_batch([pa.array(part)], schema=SCHEMA), keys[at : at + chunk])
        got = _ids(s)
        assert np.array_equal(got, want), name
        assert not (tmp_path / name).exists()
