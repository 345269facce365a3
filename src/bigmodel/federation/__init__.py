"""Federated learning: clients train on data that never leaves them; a server averages updates.

Flower is the transport (``flwr.server.start_server`` / ``start_client`` over gRPC on 127.0.0.1, or
Flower's server loop with in-process clients for a simulation); the algorithms are plain PyTorch.
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no phoning home (and no internet here)

from typing import Any

from bigmodel.federation.config import FederatedConfig, validate


def federated(cfg: FederatedConfig | None = None, **fields: Any) -> dict[str, Any]:
    """Train a model across ``cfg.clients`` clients that never share their rows; return the summary.

    ``bigmodel.federated(dataset="digits", clients=10, rounds=20, partition="dirichlet:0.5")`` is
    the same as passing ``FederatedConfig(...)``. Returns ``{"metrics", "rounds", "clients",
    "world_size", "mode", "run_dir", ...}``; the run directory is a loadable model directory.
    """
    # Flower is imported here, on first use: every `import bigmodel` (each CLI call, each DDP
    # worker) would otherwise pay for it. The run is prepared here, in the parent, then served in
    # this process or launched as real processes (processes.py builds on run.py, never the reverse).
    from bigmodel.federation.run import prepare_run, serve

    cfg = prepare_run(cfg if cfg is not None else validate(fields))
    if cfg.mode == "processes":
        from bigmodel.federation.processes import launch

        return launch(cfg)
    return serve(cfg)


__all__ = ["FederatedConfig", "federated"]
