"""Split a training set's rows among K clients: IID, or label-skewed by a Dirichlet draw.

A partition is a deterministic function of (labels, K, seed), so every client process computes the
same split on its own and keeps only its own rows; no row crosses the network.
"""

from __future__ import annotations

import numpy as np

from bigmodel.errors import BigModelError


def iid(n: int, clients: int, seed: int) -> list[np.ndarray]:
    """Shuffle the rows and deal them into ``clients`` shards whose sizes differ by at most one."""
    if n < clients:
        raise BigModelError(f"--clients {clients} is more than the {n} training rows")
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(s) for s in np.array_split(perm, clients)]


def dirichlet(
    labels: np.ndarray, clients: int, alpha: float, seed: int, min_rows: int = 2
) -> list[np.ndarray]:
    """Label skew (Hsu et al. 2019): for each class, its rows are shared among clients in
    proportions drawn from Dir(alpha, ..., alpha). Small alpha gives each client few classes.

    Draws again (up to 100 times) until every client holds at least ``min_rows`` rows.
    """
    labels = np.asarray(labels)
    if len(labels) < clients * min_rows:
        raise BigModelError(
            f"--clients {clients} is too many for {len(labels)} training rows (each needs {min_rows})"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(100):
        shards: list[list[int]] = [[] for _ in range(clients)]
        for c in classes:
            rows = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(rows)).astype(int)
            for k, part in enumerate(np.split(rows, cuts)):
                shards[k].extend(part.tolist())
        if min(len(s) for s in shards) >= min_rows:
            return [np.sort(np.array(s, dtype=np.int64)) for s in shards]
    raise BigModelError(
        f"dirichlet:{alpha:g} left a client with under {min_rows} rows in 100 draws; "
        "use fewer --clients or a larger alpha"
    )


def partition(labels: np.ndarray, clients: int, kind: str, alpha: float, seed: int) -> list[np.ndarray]:
    """Row indices of each client's shard."""
    if kind == "iid":
        return iid(len(labels), clients, seed)
    return dirichlet(labels, clients, alpha, seed)
