"""Shuffle a window's rows in blocks of ``s`` consecutive stored rows, and gather them.

A window of ``w`` rows is ``ceil(w / s)`` blocks (the last one short when ``s`` does not divide
``w``). Its shuffled order is the blocks in a random order laid end to end. Gathering whole blocks
moves ``4 * s``-byte runs of each float32 column instead of single values: at ``s = 4`` about 3.5x
less work than a row-by-row gather, close to a plain copy.
"""

from __future__ import annotations

import numpy as np


def block_perm(rng: np.random.Generator, w: int, s: int) -> np.ndarray:
    """A window's blocks (``(ceil(w/s),)`` block numbers) in shuffled order; ``s = 1``: its rows."""
    return rng.permutation(-(-w // s))


def block_rows(blocks: np.ndarray, s: int, w: int) -> np.ndarray:
    """Block numbers -> the row positions they hold, in order (a short last block keeps its real rows)."""
    if s == 1:
        return blocks
    rows = (blocks[:, None] * s + np.arange(s)).ravel()  # (len(blocks) * s,)
    return rows if w % s == 0 else rows[rows < w]


def rows_in(blocks: np.ndarray, s: int, w: int) -> int:
    """How many rows ``blocks`` hold (all ``s`` each, but a short last block)."""
    short = w % s and bool((blocks == w // s).any())
    return len(blocks) * s - (s - w % s if short else 0)


def whole_blocks(rows: np.ndarray, s: int) -> np.ndarray | None:
    """Row positions -> the numbers of the blocks they fill, or None when they are not whole, aligned
    blocks. A rank's share of a batch is whole blocks when its size is a multiple of ``s`` (1024 over 2
    ranks, say); other shares are taken row by row."""
    if len(rows) % s:
        return None
    runs = rows.reshape(-1, s)  # (n / s, s)
    first = runs[:, 0]
    if (first % s).any() or not np.array_equal(runs, first[:, None] + np.arange(s)):
        return None
    return first // s


def gather_blocks(col: np.ndarray, blocks: np.ndarray, s: int, out: np.ndarray) -> None:
    """``out`` (n,) <- the rows of ``col`` (w,) that ``blocks`` name, block after block. Whole blocks
    are gathered as (w // s, s) rows; a short last block, wherever it falls, is copied on its own."""
    w = len(col)
    full = w // s
    whole = col[: full * s].reshape(full, s)
    at = np.flatnonzero(blocks == full) if w % s else np.empty(0, np.int64)
    if len(at) == 0:
        np.take(whole, blocks, axis=0, out=out.reshape(-1, s), mode="clip")
        return
    q, tail = int(at[0]), w % s  # the short block is the q-th taken
    np.take(whole, blocks[:q], axis=0, out=out[: q * s].reshape(-1, s), mode="clip")
    out[q * s : q * s + tail] = col[full * s :]
    np.take(whole, blocks[q + 1 :], axis=0, out=out[q * s + tail :].reshape(-1, s), mode="clip")
