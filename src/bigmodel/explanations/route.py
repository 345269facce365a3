"""``POST /v2/models/{name}[/versions/{v}]/explain``: attributions of the served version's answers.

Body: ``{"rows": [{<feature>: number, ...}, ...], "method": "integrated_gradients",
"target": null, "n_steps": 64}`` (only ``rows`` is required; at most ``max_rows`` rows; other keys
of a row, such as the label, are ignored). The answer is the JSON of ``bigmodel explain --json``
for those rows (``rows``, ``importance``, ``convergence_delta`` per row for Integrated Gradients)
with ``model`` and ``model_version``.

Explanations cost ``n_steps`` forward and backward passes per row, so they run one at a time on a
single worker thread (off the event loop: inference is never queued behind them; one request's
GradientShap seeding never meets another's), with at most ``max_pending`` waiting (then 503).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bigmodel.artifacts import LoadedModel, load_model
from bigmodel.errors import BigModelError
from bigmodel.explanations.core import METHODS, explain_batch
from bigmodel.rows import features_from_table, table_from_rows
from bigmodel.serve.extension import HTTPError, RouteGroup, Server, json_response

FIELDS = {"rows", "method", "target", "n_steps"}


def explain_routes(*, max_rows: int = 64, max_steps: int = 256, max_pending: int = 8) -> RouteGroup:
    """The explain route group for ``create_app(..., extensions=[...])``."""

    def group(server: Server) -> list[BaseRoute]:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")
        models: dict[tuple[str, int], LoadedModel] = {}  # PyTorch copies of the served versions
        pending = [0]

        async def close() -> None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

        server.on_shutdown(close)

        def work(key: tuple[str, int], path: Any, body: dict[str, Any]) -> dict[str, Any]:
            for k in [k for k in models if not server.models.is_loaded(*k)]:  # released versions
                models.pop(k, None)
            loaded = models.get(key)
            if loaded is None:
                loaded = models[key] = load_model(path, check=False)  # hashes checked when it was served
            table = table_from_rows(body.get("rows"), loaded.meta, "explain", labels=False)
            x = features_from_table(table, loaded.meta, "explain")
            return explain_batch(
                loaded, x, body["method"], target=body.get("target"), n_steps=body["n_steps"]
            )

        async def explain(request: Request) -> Response:
            name, version = request.path_params["name"], request.path_params.get("version")
            served = server.models.get(name, version)  # 404 for a model or version not served here
            body = await server.read_json(request)
            unknown = sorted(set(body) - FIELDS)
            if unknown:
                raise HTTPError(
                    400, f"explain: unknown field '{unknown[0]}' (fields: {', '.join(sorted(FIELDS))})"
                )
            body.setdefault("method", "integrated_gradients")
            body.setdefault("n_steps", 64)
            if body["method"] not in METHODS:
                raise HTTPError(
                    400, f"explain: unknown method {body['method']!r} (known: {', '.join(METHODS)})"
                )
            steps = body["n_steps"]
            if type(steps) is not int or not 2 <= steps <= max_steps:
                raise HTTPError(400, f"explain: 'n_steps' must be an integer from 2 to {max_steps}")
            rows = body.get("rows")
            if isinstance(rows, list) and len(rows) > max_rows:
                raise HTTPError(413, f"explain: {len(rows)} rows; at most {max_rows} per request")
            if pending[0] >= max_pending:
                raise HTTPError(
                    503,
                    f"explain: {pending[0]} explanations already waiting; retry later",
                    {"Retry-After": "1"},
                )
            pending[0] += 1
            try:
                key = (served.name, served.version)
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(pool, work, key, served.runtime.path, body)
            except BigModelError as err:
                raise HTTPError(400, str(err)) from None
            finally:
                pending[0] -= 1
            return json_response({"model": name, "model_version": served.version_str, **result})

        return [
            Route("/v2/models/{name}/explain", explain, methods=["POST"]),
            Route("/v2/models/{name}/versions/{version}/explain", explain, methods=["POST"]),
        ]

    return group
