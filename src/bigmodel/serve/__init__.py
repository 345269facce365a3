"""Serving over the Open Inference Protocol (KServe v2): ``serve(ServeConfig(...))`` runs the
server, ``create_app`` builds the ASGI app (for tests or another ASGI host), ``predict`` is a
client for people."""

from bigmodel.serve.app import ServerState, create_app, serve
from bigmodel.serve.config import ServeConfig

__all__ = ["ServeConfig", "ServerState", "create_app", "serve"]
