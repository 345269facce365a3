"""What the server's own routes share: settings, the served models, metrics, the access log, hooks.

Extensions never see this object; they get ``bigmodel.serve.extension.Server``, a narrow view of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bigmodel.serve.config import ServeConfig
from bigmodel.serve.metrics import AccessLog, Metrics
from bigmodel.serve.repository import Repository


@dataclass
class ServerState:
    """What route handlers share: settings, the served models, metrics and the access log."""

    cfg: ServeConfig
    repo: Repository
    metrics: Metrics
    access: AccessLog
    on_ready: list[Callable[[ServerState], None]] = field(default_factory=list)
    # extensions' own clean-up (e.g. a learner thread), before the models are released
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    grpc_url: str | None = None  # host:port of the gRPC endpoint once it listens (--grpc-port)
