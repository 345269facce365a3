"""A labelled stream with concept drift at known rows, for checks, the benchmark and the demo.

Binary labels from a linear concept ``y = 1[z . w > 0]`` on latent standard normal features ``z``;
at each drift point the concept switches between ``w`` and a direction ``u`` orthogonal to it
(``w`` again after the second drift: a recurring concept), so a model of the old concept is right
on only about half of the new rows. Features are written in raw units (random scale and offset per
feature), so standardization matters, and a fraction ``noise`` of labels is flipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_path


def drift_rows(
    rows: int,
    *,
    features: int = 8,
    drift_at: Sequence[int] = (),
    seed: int = 0,
    noise: float = 0.05,
    start: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``start .. start+rows`` of the stream: x (N, F) float32 raw features, y (N,) 0/1.

    The concepts and feature units depend only on ``seed`` (so a model trained on ``start=0`` rows
    of one stream and another stream with a different ``start`` share them)."""
    if features < 2:
        raise BigModelError(f"a drift stream needs at least 2 features, got {features}")
    g = np.random.default_rng(seed)
    w = g.standard_normal(features)
    u = g.standard_normal(features)
    u -= (u @ w) / (w @ w) * w  # orthogonal to w: the two concepts agree on half of the rows
    scale = np.exp(g.uniform(-1.0, 1.0, features))
    offset = g.uniform(-3.0, 3.0, features)
    r = np.random.default_rng([seed, start, rows])
    z = r.standard_normal((rows, features))  # (N, F)
    index = start + np.arange(rows)
    concept = np.searchsorted(np.sort(np.asarray(drift_at, dtype=np.int64)), index, side="right")  # (N,)
    y = np.where(concept % 2 == 1, z @ u, z @ w) > 0  # (N,)
    y = y.astype(np.int64)
    y = np.where(r.random(rows) < noise, 1 - y, y)
    return (z * scale + offset).astype(np.float32), y


def write_drift_csv(path: str | Path, rows: int, **kwargs: object) -> Path:
    """The stream as a CSV with columns f0..f{F-1} and ``label`` (never overwrites a file)."""
    path = Path(path)
    if path.exists():
        raise BigModelError(f"{path} already exists (nothing was overwritten)")
    x, y = drift_rows(rows, **kwargs)  # type: ignore[arg-type]
    cols = {f"f{j}": x[:, j] for j in range(x.shape[1])}
    with atomic_path(path) as tmp:
        pcsv.write_csv(pa.table({**cols, "label": y}), tmp)
    return path
