import numpy as np

from bigmodel.data.rowkey import bucket_of, is_val, order_key, split_key


def _rows(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, 3, size=n).astype(np.int64)


def test_keys_depend_on_the_row_and_seed_only_not_on_batching():
    x, y = _rows()
    whole = order_key(x, y, 7)
    parts = np.concatenate([order_key(x[a : a + 999], y[a : a + 999], 7) for a in range(0, len(x), 999)])
    assert np.array_equal(whole, parts)
    assert not np.array_equal(whole, order_key(x, y, 8))
    assert not np.array_equal(whole, split_key(x, y, 7))  # independent hashes for split and order
    assert len(np.unique(whole)) == len(x)  # 64-bit keys: distinct rows, distinct keys


def test_a_different_label_or_feature_changes_the_key_and_minus_zero_does_not():
    x, y = _rows(100)
    k = order_key(x, y, 0)
    assert (order_key(x, (y + 1) % 3, 0) != k).all()
    x2 = x.copy()
    x2[:, 4] += 1
    assert (order_key(x2, y, 0) != k).all()
    z = np.zeros((1, 2), np.float32)
    assert order_key(-z, np.zeros(1, np.int64), 0) == order_key(z, np.zeros(1, np.int64), 0)
    t = np.array([0.5, -0.0], np.float32)
    assert split_key(x[:2], t, 0)[1] != split_key(x[:2], np.array([0.5, 1.0], np.float32), 0)[1]


def test_the_split_takes_about_the_fraction_and_duplicates_stay_together():
    x, y = _rows()
    val = is_val(x, y, 3, 0.2)
    assert abs(val.mean() - 0.2) < 0.01
    dup = is_val(np.concatenate([x, x]), np.concatenate([y, y]), 3, 0.2)
    assert np.array_equal(dup[: len(x)], dup[len(x) :])
    # the order is uncorrelated with the source order
    assert abs(np.corrcoef(np.argsort(order_key(x, y, 3)), np.arange(len(x)))[0, 1]) < 0.05


def test_buckets_are_monotone_in_the_key_and_cover_all():
    x, y = _rows()
    keys = order_key(x, y, 1)
    b = bucket_of(keys, 7)
    assert b.min() == 0 and b.max() == 6
    order = np.argsort(keys)
    assert (np.diff(b[order]) >= 0).all()
    counts = np.bincount(b, minlength=7)
    assert counts.min() > 0.8 * len(x) / 7
