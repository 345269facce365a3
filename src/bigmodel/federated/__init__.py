"""Federated learning: clients train on data that never leaves them; a server averages updates.

Flower is the transport (``flwr.server.start_server`` / ``start_client`` over gRPC on 127.0.0.1, or
Flower's server loop with in-process clients for a simulation); the algorithms are plain PyTorch.
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no phoning home (and no internet here)

from typing import Any

from bigmodel.federated.config import FederatedConfig


def federated(cfg: FederatedConfig | None = None, **fields: Any) -> dict[str, Any]:
    """Train a model across ``cfg.clients`` clients that never share their rows; return the summary.

    ``bigmodel.federated(dataset="digits", clients=10, rounds=20, partition="dirichlet:0.5")`` is
    the same as passing ``FederatedConfig(...)``. Returns ``{"metrics", "rounds", "clients",
    "world_size", "mode", "run_dir", ...}``; the run directory is a loadable model directory.
    """
    # Flower is imported here, on first use: every `import bigmodel` (each CLI call, each DDP
    # worker) would otherwise pay for it.
    from bigmodel.federated.run import federated as run

    return run(cfg, **fields)


__all__ = ["FederatedConfig", "federated"]
