"""Federated learning: clients train on data that never leaves them; a server averages updates.

Flower is the transport (``flwr.server.start_server`` / ``start_client`` over gRPC on 127.0.0.1, or
Flower's server loop with in-process clients for a simulation); the algorithms are plain PyTorch.
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no phoning home (and no internet here)

from bigmodel.federated.config import FederatedConfig
from bigmodel.federated.run import federated

__all__ = ["FederatedConfig", "federated"]
