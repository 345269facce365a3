"""The public seam for server extensions: everything a route group may use of the server.

A route group is a function ``server -> [routes]`` passed to ``create_app(cfg, extensions=[...])``
or ``serve(cfg, extensions=[...])``. It is called once, when the app is built, with a ``Server``:
the served models (look-ups only), the request-body reader under the server's size limit, a place
for its own Prometheus families and its shutdown hooks. Handlers raise ``HTTPError`` for a 4xx/503
answer (``{"error": message}``); an unknown model is a 404 on its own. The API key, the access log
and error answers apply to extension routes as to every other route::

    from starlette.routing import Route
    from bigmodel.serve.extension import Server, json_response

    def echo(server: Server) -> list[BaseRoute]:
        async def handler(request):
            served = server.models.get(request.path_params["name"])
            body = await server.read_json(request)
            return json_response({"model": served.name, "version": served.version_str, **body})

        return [Route("/v2/models/{name}/echo", handler, methods=["POST"])]

Explanations (``bigmodel.explanations.route``) and online feedback (``bigmodel.online_learning.server``) are
built this way; nothing here exposes loading, unloading or the registry's write side.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.routing import BaseRoute

from bigmodel.errors import BigModelError
from bigmodel.registry import Registry
from bigmodel.serve.http import SERVED, HTTPError, json_response, read_json_object
from bigmodel.serve.repository import ModelNotFound, Repository, Served


class Models:
    """The served models as an extension sees them: look-ups, no loading or unloading."""

    def __init__(self, repo: Repository):
        self._repo = repo

    def get(self, name: str, version: str | None = None) -> Served:
        """The loaded version ``version`` of ``name`` (None: the one its alias points at), else
        ``ModelNotFound``, which answers 404. No await follows inside: a look-up and a submit to
        ``served.batcher`` right after it never meet a version being released."""
        return self._repo.get(name, version)

    def names(self) -> list[str]:
        """The names of the models served, sorted."""
        return self._repo.names()

    def is_loaded(self, name: str, version: int) -> bool:
        """Whether version ``version`` of ``name`` is still served (caches drop the others)."""
        return (name, version) in self._repo.loaded

    def followed_alias(self, name: str) -> str | None:
        """The alias this server follows for ``name``; None when it only serves pinned versions."""
        return self._repo.followed_alias(name)

    @property
    def registry(self) -> Registry:
        """The registry the models come from (e.g. where a learner registers new versions);
        a server of one model directory (``--model-dir``) has none: a one-line error."""
        if self._repo.registry is None:
            raise BigModelError(f"serving the model directory {self._repo.fixed}: there is no registry")
        return self._repo.registry


class Server:
    """What a route group sees of the server (see the module docstring)."""

    def __init__(
        self,
        repo: Repository,
        metrics: CollectorRegistry,
        *,
        max_body_bytes: int,
        shutdown_hooks: list[Callable[[], Awaitable[None]]],
        timeout_s: float = 30.0,
    ):
        self.models = Models(repo)
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s  # --timeout-s: how long a request may wait on a batcher
        self._metrics = metrics
        self._shutdown_hooks = shutdown_hooks

    async def read_json(self, request: Request, *, empty_ok: bool = False) -> dict[str, Any]:
        """The body as a JSON object under the server's size limit (413 beyond it, 400 if not an
        object); ``empty_ok``: no body reads as ``{}``."""
        return await read_json_object(request, self.max_body_bytes, empty_ok=empty_ok)

    def answered_by(self, request: Request, served: Served) -> None:
        """Count ``request`` as one of ``served``'s (request metrics by model, version and status,
        and the access log), as infer requests are."""
        request.scope[SERVED] = (served.name, served.version_str)

    def add_collector(self, collector: Collector) -> None:
        """Render ``collector``'s metric families on ``/metrics`` too (prometheus_client's
        custom-collector protocol: ``collect()`` yields families, called on each scrape)."""
        self._metrics.register(collector)

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Await ``hook()`` at shutdown, after the port stops answering and before the models are
        released (stop worker threads and processes here)."""
        self._shutdown_hooks.append(hook)


class RouteGroup(Protocol):
    """An extension: given the server's public view once, it returns its routes."""

    def __call__(self, server: Server, /) -> list[BaseRoute]: ...


__all__ = ["HTTPError", "ModelNotFound", "Models", "RouteGroup", "Served", "Server", "json_response"]
