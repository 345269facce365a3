"""A row's place in a prepared dataset as a function of the row and the seed alone.

The local engine's split and shuffle order depend on how its source happened to be batched and on
the number of shuffle buckets; a Spark job partitions its input in ways no other engine can copy.
For two engines to write the same rows in each split, in the same order (and so the same content
hash), both decide from two 64-bit hashes of each row's bytes (float32 features, then the label; or a
language-modelling row's byte tokens):

- ``split_key``: the row goes to validation when its key, as a fraction of 2**64, is below
  ``val_fraction``. Identical rows land in the same split, so duplicates never leak into validation.
- ``order_key``: the rows of a split are written sorted by it. Identical rows are interchangeable,
  so ties need no breaking. ``bucket_of`` is monotone in the key: sorting each bucket and
  concatenating the buckets in order is the whole sort, in bounded memory (an external shuffle) or
  as a range partitioning (Spark).

The hash is splitmix64's finaliser folded over the row's 32-bit words: vectorised in numpy, and the
same code runs on a Spark executor (inside ``mapInArrow``), so nothing has to be reimplemented in
the JVM. Not cryptographic: it only has to look uniform and be the same everywhere.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SPLIT, _ORDER = 1, 2  # salts: the split and the order are independent hashes of the row


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection of uint64 with good avalanche), element-wise."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _words(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The row's bytes as (n, F + 2) uint64 words: each float32 feature's bits, then the label's
    64 bits (int64 class code, or a float32 target's bits). -0.0 counts as 0.0: equal numbers must
    hash alike whichever engine parsed them."""
    x = np.ascontiguousarray(x, dtype=np.float32) + np.float32(0.0)  # -0.0 + 0.0 == +0.0
    cols = [x.view(np.uint32).astype(np.uint64)]
    if y.dtype == np.float32 or y.dtype == np.float64:
        yb = (y.astype(np.float32) + np.float32(0.0)).view(np.uint32).astype(np.uint64)
    else:
        yb = y.astype(np.int64).view(np.uint64)
    cols.append((yb & np.uint64(0xFFFFFFFF))[:, None])
    cols.append((yb >> np.uint64(32))[:, None])
    return np.concatenate(cols, axis=1)


def _token_words(tokens: np.ndarray) -> np.ndarray:
    """A language-modelling row's bytes, (n, context + 1) uint8, as (n, W) little-endian uint64
    words (the last one zero-padded)."""
    t = np.ascontiguousarray(tokens, dtype=np.uint8)
    pad = -t.shape[1] % 8
    if pad:
        t = np.concatenate([t, np.zeros((len(t), pad), dtype=np.uint8)], axis=1)
    return t.view(np.dtype("<u8")).astype(np.uint64)


def _hash_words(words: np.ndarray, seed: int, salt: int) -> np.ndarray:
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        h = np.full(len(words), _mix(np.array([seed * 4 + salt], dtype=np.uint64))[0] ^ _GOLDEN)
        for j in range(words.shape[1]):
            h = _mix(h ^ (words[:, j] + _GOLDEN * np.uint64(j + 1)))
    return h


def split_key(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """(n,) uint64: the hash that decides each row's split (``is_val``)."""
    return _hash_words(_words(x, y), seed, _SPLIT)


def order_key(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """(n,) uint64: the rows of a split are written in ascending order of this key."""
    return _hash_words(_words(x, y), seed, _ORDER)


def _below(keys: np.ndarray, fraction: float) -> np.ndarray:
    top = (keys >> np.uint64(11)).astype(np.float64)  # 53 bits: exact in float64
    return top * 2.0**-53 < fraction


def is_val(x: np.ndarray, y: np.ndarray, seed: int, val_fraction: float) -> np.ndarray:
    """(n,) bool: which rows belong to the validation split (about ``val_fraction`` of them)."""
    return _below(split_key(x, y, seed), val_fraction)


def tokens_is_val(tokens: np.ndarray, seed: int, val_fraction: float) -> np.ndarray:
    """``is_val`` for language-modelling rows, (n, context + 1) uint8: identical windows of text
    land in the same split, so repeated text (licence headers) never leaks into validation."""
    return _below(_hash_words(_token_words(tokens), seed, _SPLIT), val_fraction)


def tokens_order_key(tokens: np.ndarray, seed: int) -> np.ndarray:
    """``order_key`` for language-modelling rows, (n, context + 1) uint8."""
    return _hash_words(_token_words(tokens), seed, _ORDER)


def bucket_of(keys: np.ndarray, buckets: int) -> np.ndarray:
    """(n,) int64 bucket in [0, buckets), non-decreasing in the key (multiply-shift on its top 32
    bits), so buckets sorted one by one and concatenated in order are sorted as a whole."""
    return ((keys >> np.uint64(32)) * np.uint64(buckets) >> np.uint64(32)).astype(np.int64)
