"""Serving over the Open Inference Protocol (KServe v2): ``serve(ServeConfig(...))`` runs the
server, ``create_app`` builds the ASGI app (for tests or another ASGI host), ``predict`` is a
client for people."""

from typing import TYPE_CHECKING

from bigmodel.lazy import lazy_exports
from bigmodel.serve.config import ServeConfig

if TYPE_CHECKING:
    from bigmodel.serve.app import create_app, serve
    from bigmodel.serve.state import ServerState

# The server (torch, FastAPI) loads on first use: `bigmodel predict` only needs the client.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "ServerState": "bigmodel.serve.state",
            "create_app": "bigmodel.serve.app",
            "serve": "bigmodel.serve.app",
        },
    )

__all__ = ["ServeConfig", "ServerState", "create_app", "serve"]
