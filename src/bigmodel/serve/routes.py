"""The Open Inference Protocol's other endpoints, one small group per concern.

Each group is a function ``state -> list of routes``. ``create_app`` mounts the core groups below
plus any ``extensions`` it is given: a later stage (online feedback, explanations) adds its own
module through ``bigmodel.serve.extension`` without touching this file. Handlers raise
``HTTPError`` for 4xx/503 answers (an unknown model, ``ModelNotFound``, is a 404); the app turns
them into ``{"error": ...}``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bigmodel._version import __version__
from bigmodel.errors import BigModelError
from bigmodel.serve.http import HTTPError, json_response, read_json_object
from bigmodel.serve.repository import ModelNotFound
from bigmodel.serve.state import ServerState

EXTENSIONS = ["binary_tensor_data", "model_repository", "metrics"]


def health(state: ServerState) -> list[BaseRoute]:
    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        if not state.repo.ready():
            waiting = [str(t.ref) for t in state.repo.targets if t.current is None]
            raise HTTPError(503, f"not ready: waiting for {', '.join(waiting)}")
        return json_response({"ready": True})

    return [Route("/v2/health/live", live), Route("/v2/health/ready", ready)]


def metadata(state: ServerState) -> list[BaseRoute]:
    async def server(request: Request) -> Response:
        return json_response({"name": "bigmodel", "version": __version__, "extensions": EXTENSIONS})

    async def model(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        served = state.repo.get(name, version)
        meta = served.runtime.metadata()
        return json_response(
            {
                "name": name,
                "versions": state.repo.versions(name),
                "platform": meta.pop("platform"),
                "inputs": meta.pop("inputs"),
                "outputs": meta.pop("outputs"),
                # beyond the protocol's required keys: what a human client needs to build a request
                "parameters": {
                    "version": served.version_str,
                    "aliases": state.repo.aliases_served(name),
                    "max_batch_size": state.cfg.max_batch_size,
                    **meta,
                },
            }
        )

    async def model_ready(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        served = state.repo.get(name, version)
        return json_response({"name": name, "version": served.version_str, "ready": True})

    return [
        Route("/v2", server),
        Route("/v2/models/{name}", model),
        Route("/v2/models/{name}/versions/{version}", model),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
    ]


def repository(state: ServerState) -> list[BaseRoute]:
    limit = state.cfg.max_body_bytes

    async def index(request: Request) -> Response:
        body = await read_json_object(request, limit, empty_ok=True)
        rows = await state.repo.index()
        if body.get("ready"):
            rows = [r for r in rows if r["state"] == "READY"]
        return json_response(rows)

    async def load(request: Request) -> Response:
        await read_json_object(request, limit, empty_ok=True)
        try:
            await state.repo.load(request.path_params["name"])
        except BigModelError as err:
            raise HTTPError(404 if "no model named" in str(err) else 400, f"cannot load: {err}") from None
        return json_response({})

    async def unload(request: Request) -> Response:
        await read_json_object(request, limit, empty_ok=True)
        try:
            await state.repo.unload(request.path_params["name"])
        except ModelNotFound as err:
            raise HTTPError(404, str(err)) from None
        except BigModelError as err:  # a malformed NAME:VERSION or NAME@ALIAS
            raise HTTPError(400, f"cannot unload: {err}") from None
        return json_response({})

    return [
        Route("/v2/repository/index", index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", unload, methods=["POST"]),
    ]


def metrics(state: ServerState) -> list[BaseRoute]:
    async def scrape(request: Request) -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return [Route("/metrics", scrape)]


CORE = (health, metadata, repository, metrics)
