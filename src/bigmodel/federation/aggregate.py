"""Server-side aggregation: screen the clients' updates, then average them (FedAvg), optionally
with differential privacy (clip each update, add Gaussian noise to the average).

An *update* is a client's returned weights minus the global weights it started the round from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Update:
    cid: int
    weights: list[np.ndarray]
    num_examples: int
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Screened:
    accepted: list[Update]
    excluded: list[dict[str, Any]]  # {"client": cid, "reason": "..."}
    norms: dict[int, float]  # L2 norm of each finite update


def deltas(global_w: list[np.ndarray], weights: list[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(w, dtype=np.float64) - g for w, g in zip(weights, global_w, strict=True)]


def l2(arrays: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.square(a).sum()) for a in arrays)))


def screen(
    global_w: list[np.ndarray],
    updates: list[Update],
    *,
    max_norm: float | None = None,
    outlier_factor: float | None = 10.0,
) -> Screened:
    """Leave out updates of the wrong shape, with NaN/inf values, with a norm over ``max_norm``, or
    (with 3 or more finite updates) with a norm over ``outlier_factor`` x the round's median."""
    excluded: list[dict[str, Any]] = []
    finite: list[tuple[Update, float]] = []
    for u in updates:
        if len(u.weights) != len(global_w):
            excluded.append(
                {"client": u.cid, "reason": f"{len(u.weights)} tensors, expected {len(global_w)}"}
            )
            continue
        bad = next(
            (i for i, (w, g) in enumerate(zip(u.weights, global_w, strict=True)) if w.shape != g.shape), None
        )
        if bad is not None:
            excluded.append(
                {
                    "client": u.cid,
                    "reason": f"tensor {bad} has shape {tuple(u.weights[bad].shape)}, "
                    f"expected {tuple(global_w[bad].shape)}",
                }
            )
            continue
        if not all(np.isfinite(w).all() for w in u.weights):
            excluded.append({"client": u.cid, "reason": "update has NaN or infinite values"})
            continue
        norm = l2(deltas(global_w, u.weights))
        if max_norm is not None and norm > max_norm:
            excluded.append(
                {"client": u.cid, "reason": f"update norm {norm:.4g} > max_update_norm {max_norm:g}"}
            )
            continue
        finite.append((u, norm))
    norms = {u.cid: n for u, n in finite}
    accepted = [u for u, _ in finite]
    if outlier_factor is not None and len(finite) >= 3:
        median = float(np.median([n for _, n in finite]))
        limit = outlier_factor * median
        accepted = []
        for u, n in finite:
            if median > 0 and n > limit:
                excluded.append(
                    {
                        "client": u.cid,
                        "reason": f"update norm {n:.4g} > {outlier_factor:g} x the round's median {median:.4g}",
                    }
                )
            else:
                accepted.append(u)
    return Screened(accepted, excluded, norms)


def clip(delta: list[np.ndarray], max_norm: float) -> list[np.ndarray]:
    """Scale an update down to L2 norm ``max_norm`` (unchanged if already within it)."""
    n = l2(delta)
    return delta if n <= max_norm else [d * (max_norm / n) for d in delta]


def aggregate(
    global_w: list[np.ndarray],
    accepted: list[Update],
    *,
    dp_clip: float | None = None,
    dp_noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> list[np.ndarray]:
    """The new global weights.

    Without DP: FedAvg, the average of the updates weighted by each client's number of examples.
    With ``dp_clip``: every update is clipped to that norm and the average is uniform, so one
    client moves the average by at most dp_clip / m (m clients); Gaussian noise of std
    ``dp_noise * dp_clip / m`` is then added to each coordinate (DP-FedAvg, fixed clipping).
    """
    if not accepted:
        return [g.copy() for g in global_w]
    ds = [deltas(global_w, u.weights) for u in accepted]
    m = len(ds)
    if dp_clip is not None:
        ds = [clip(d, dp_clip) for d in ds]
        coef = np.full(m, 1.0 / m)
    else:
        n = np.array([u.num_examples for u in accepted], dtype=np.float64)
        coef = n / n.sum()
    avg = [sum(c * d[i] for c, d in zip(coef, ds, strict=True)) for i in range(len(global_w))]
    if dp_clip is not None and dp_noise > 0:
        rng = rng or np.random.default_rng()
        std = dp_noise * dp_clip / m
        avg = [a + rng.normal(0.0, std, size=a.shape) for a in avg]
    return [(g + a).astype(g.dtype) for g, a in zip(global_w, avg, strict=True)]
