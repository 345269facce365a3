"""The ASGI app: Open Inference Protocol routes over the models a ``Repository`` holds.

``create_app(cfg, extensions=...)`` builds it; ``serve(cfg)`` runs it on uvicorn. The outer ASGI
callable does what every request needs, cheaply: the API key middleware (health stays open), the
infer fast path, and an access-log line for every other route, which Starlette routes. Extensions
(``bigmodel.serve.extension``) are route groups given a narrow view of the server. The lifespan
loads the models before the port answers ready and drains every queue on shutdown.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from bigmodel.errors import BigModelError
from bigmodel.serve.auth import APIKeyMiddleware
from bigmodel.serve.config import ServeConfig
from bigmodel.serve.extension import RouteGroup, Server
from bigmodel.serve.generate import generate_routes
from bigmodel.serve.http import BUDGET, SERVED, BodyBudget, ClientGone, HTTPError, json_response
from bigmodel.serve.infer import handle_infer
from bigmodel.serve.metrics import AccessLog, Metrics
from bigmodel.serve.openai_completions import completions_routes
from bigmodel.serve.openai_embeddings import embeddings_routes
from bigmodel.serve.repository import ModelNotFound, Repository
from bigmodel.serve.routes import CORE
from bigmodel.serve.state import ServerState

log = logging.getLogger("bigmodel.serve")

# Route groups built on the public seam that every server mounts, before the caller's extensions.
DEFAULT_EXTENSIONS: tuple[RouteGroup, ...] = (embeddings_routes, generate_routes, completions_routes)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return Response(
        json_response({"error": exc.message}).body,
        exc.status,
        headers=exc.headers,
        media_type="application/json",
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelNotFound)
    return json_response({"error": str(exc)}, 404)


async def _client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)  # nobody reads it: the status is for the access log


async def _starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return json_response({"error": f"no such endpoint: {request.method} {request.url.path}"}, 404)
    return json_response({"error": str(exc.detail)}, exc.status_code)


async def _bug(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return json_response({"error": f"internal error: {type(exc).__name__}"}, 500)


class App:
    """The ASGI application (see the module docstring)."""

    def __init__(self, cfg: ServeConfig, extensions: Sequence[RouteGroup] = ()):
        metrics = Metrics()
        access = AccessLog.open(cfg.access_log)  # a bad path fails before any model loads
        self.state = ServerState(cfg, Repository(cfg, metrics), metrics, access)
        # extensions get the public view only, so what they rely on stays small and stable
        server = Server(
            self.state.repo,
            metrics.registry,
            max_body_bytes=cfg.max_body_bytes,
            shutdown_hooks=self.state.on_shutdown,
            timeout_s=cfg.timeout_s,
        )
        routes = [r for group in CORE for r in group(self.state)]
        routes += [r for group in (*DEFAULT_EXTENSIONS, *extensions) for r in group(server)]
        self.router = Starlette(
            routes=routes,
            exception_handlers={
                HTTPError: _http_error,
                ModelNotFound: _not_found,
                ClientGone: _client_gone,
                HTTPException: _starlette_error,
                Exception: _bug,
            },
        )
        self._http: Callable[..., Any] = self._dispatch
        if cfg.api_key:
            self._http = APIKeyMiddleware(self._dispatch, cfg.api_key, on_refused=access.write)
        self.budget = BodyBudget(cfg.max_buffered_bytes)
        self.startup_error: BigModelError | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] == "http":
            scope[BUDGET] = self.budget
            try:
                await self._http(scope, receive, send)
            finally:
                self.budget.release(scope)

    async def _dispatch(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope["path"]
        if scope["method"] == "POST" and path.endswith("/infer"):
            parts = path.split("/")  # ['', 'v2', 'models', name, ('versions', v,) 'infer']
            if len(parts) == 5 and parts[1] == "v2" and parts[2] == "models":
                return await handle_infer(self.state, scope, receive, send, parts[3], None)
            if len(parts) == 7 and parts[1] == "v2" and parts[2] == "models" and parts[4] == "versions":
                return await handle_infer(self.state, scope, receive, send, parts[3], parts[5])
        await self._routed(scope, receive, send)

    async def _routed(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        t0 = time.perf_counter()
        status = [0]

        async def send_and_note(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.router(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - t0
            record = {"method": scope["method"], "path": scope["path"], "status": status[0]}
            served = scope.get(SERVED)  # a model route said which version answered
            if served is not None:
                # counted with infer requests: one error rate and latency per model, whatever the route
                model, version = served
                self.state.metrics.request(model, version, status[0] or 499, seconds, None)
                record["model"], record["version"] = model, version
            record["ms"] = round(seconds * 1000, 3)
            self.state.access.write(record)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        await receive()  # lifespan.startup
        grpc = None
        try:
            self.state.access.start()
            if self.state.cfg.grpc_port is not None:  # grpcio is imported only when asked for
                from bigmodel.serve.grpc_server import GRPCServer

                grpc = GRPCServer(self.state, self.state.cfg.grpc_port)
                grpc.bind()  # before the models load: a taken port fails the start at once
            await self.state.repo.start()
            if grpc is not None:
                await grpc.start()
                self.state.grpc_url = grpc.url
        except BigModelError as err:
            self.startup_error = err
            await send({"type": "lifespan.startup.failed", "message": str(err)})
            return
        # Everything loaded so far (torch, the models, SQLAlchemy) lives until shutdown; frozen, the
        # collector stops rescanning it, which would otherwise stall requests for tens of ms.
        gc.collect()
        gc.freeze()
        for hook in self.state.on_ready:
            hook(self.state)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        if grpc is not None:  # no new calls; those under way finish, like REST's
            await grpc.stop()
        for stop in self.state.on_shutdown:
            await stop()
        await self.state.repo.stop()
        await self.state.access.close()
        await send({"type": "lifespan.shutdown.complete"})


def create_app(cfg: ServeConfig, *, extensions: Sequence[RouteGroup] = ()) -> App:
    """The ASGI app for ``cfg``; ``extensions`` are extra route groups ``server -> [routes]``
    (``bigmodel.serve.extension``)."""
    return App(cfg, extensions)


def serve(
    cfg: ServeConfig,
    *,
    extensions: Sequence[RouteGroup] = (),
    on_ready: Callable[[ServerState, str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM: bind, load the models, answer, then drain and stop cleanly."""
    import uvicorn

    try:
        sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.port))
        # listening before the models load: clients that connect once the ready line is out wait
        # in the backlog for uvicorn's accept loop instead of being refused
        sock.listen(2048)
    except OSError as err:
        raise BigModelError(f"cannot listen on {cfg.host}:{cfg.port}: {err.strerror}") from None
    port = sock.getsockname()[1]
    url = f"http://{cfg.host if ':' not in cfg.host else f'[{cfg.host}]'}:{port}"

    import torch

    torch.set_num_threads(cfg.threads)  # one forward at a time per model: extra threads only spin
    app = create_app(cfg, extensions=extensions)
    if on_ready is not None:
        app.state.on_ready.append(lambda state: on_ready(state, url))
    http: Any = "h11"
    if _pick("httptools", "h11") == "httptools":
        from bigmodel.serve.http_guard import guarded_protocol

        http = guarded_protocol(
            max_header_bytes=cfg.max_header_bytes,
            header_timeout_s=cfg.header_timeout_s,
            body_timeout_s=cfg.body_timeout_s,
        )
    config = uvicorn.Config(
        app,
        loop=_pick("uvloop", "asyncio"),
        http=http,
        h11_max_incomplete_event_size=cfg.max_header_bytes,  # the limit where h11 runs instead
        lifespan="on",
        access_log=False,  # ours is structured and cheaper
        proxy_headers=False,  # X-Forwarded-For is not trusted (and costs every request a layer)
        log_level="critical",  # errors reach the user as one line (startup) or our log (requests)
        timeout_graceful_shutdown=int(max(cfg.timeout_s, 5.0)),
    )
    server = uvicorn.Server(config)
    # uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal; a requested stop is a
    # normal end here (exit 0), so both arrive as KeyboardInterrupt and are swallowed.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    except SystemExit:  # uvicorn exits when the lifespan failed; our error says why
        if app.startup_error is None:
            raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if app.startup_error is not None:
        raise app.startup_error


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _pick(fast: str, fallback: str) -> str:
    try:
        __import__(fast)
        return fast
    except ImportError:
        return fallback


__all__ = ["App", "create_app", "serve"]
