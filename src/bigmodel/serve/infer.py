"""``POST /v2/models/{name}[/versions/{v}]/infer``: the hot path, as a plain ASGI handler.

Per-request Python work is what limits a small model's throughput, so this route skips the
framework: it reads the body under the size limit, checks it against the model's signature,
queues the rows on the version's batcher and writes the answer, recording metrics and an
access-log line on the way out. Any failure becomes ``{"error": ...}`` with a 4xx/503 status.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from bigmodel.serve import protocol
from bigmodel.serve.batcher import QueueFull, Timeout
from bigmodel.serve.http import JSON_HEADERS, ClientGone, HTTPError, read_body, send_error
from bigmodel.serve.metrics import UNKNOWN
from bigmodel.serve.repository import ModelNotFound
from bigmodel.serve.state import ServerState

log = logging.getLogger("bigmodel.serve")


async def handle_infer(
    state: ServerState, scope: dict[str, Any], receive: Any, send: Any, name: str, version: str | None
) -> None:
    t0 = time.perf_counter()
    cfg, metrics = state.cfg, state.metrics
    metrics.in_flight += 1
    model, served_version, status, rows, queued, error = UNKNOWN, "", 200, 0, None, None
    try:
        header_length = None
        for k, v in scope["headers"]:
            if k == b"inference-header-content-length":
                if not v.isdigit() or len(v) > 18:  # a body is never 10**18 bytes; int() caps digits
                    raise HTTPError(400, "Inference-Header-Content-Length must be an integer")
                header_length = int(v)
        body = await read_body(scope, receive, cfg.max_body_bytes)
        # looked up after the body is read: no await between choosing a version and queueing on it,
        # so an alias switch can never hand a request to a version that is being released
        try:
            served = state.repo.get(name, version)
        except ModelNotFound as err:
            raise HTTPError(404, str(err)) from None
        model, served_version = served.name, served.version_str
        rt = served.runtime
        if served.batcher is None:
            raise HTTPError(400, f"model {name} has no infer route (it is a {rt.family} model)")
        req = protocol.decode_request(
            body, header_length, name, rt.input, rt.outputs, max_rows=cfg.max_batch_size
        )
        rows = len(req.x)
        timeout = min(cfg.timeout_s, req.timeout_s or math.inf)
        try:
            fut = served.batcher.submit(req.x, timeout)
        except QueueFull:
            raise HTTPError(
                503,
                f"model {name} is overloaded: {cfg.max_queue} requests already queued; retry later",
                {"Retry-After": "1"},
            ) from None
        try:
            results, queued = await fut
        except Timeout:
            raise HTTPError(
                503, f"request timed out after {timeout:g} s waiting for model {name}", {"Retry-After": "1"}
            ) from None
        out, header = protocol.encode_response(name, served_version, req, results, rt.output_specs)
        if header is None:
            headers = [*JSON_HEADERS, (b"content-length", str(len(out)).encode())]
        else:
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(len(out)).encode()),
                (b"inference-header-content-length", str(header).encode()),
            ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})
    except HTTPError as err:
        status, error = err.status, err.message
        if model == UNKNOWN and name in state.repo.names():
            model = name
        await send_error(send, err)
    except ClientGone:
        status, error = 499, "client closed the connection"
    except Exception as err:  # a bug: answer 500 without a traceback, log it for the operator
        log.exception("infer on %s failed", name)
        status, error = 500, f"internal error: {type(err).__name__}"
        await send_error(send, HTTPError(500, error))
    finally:
        metrics.in_flight -= 1
        seconds = time.perf_counter() - t0
        metrics.request(model, served_version, status, seconds, queued)
        record = {
            "method": "POST",
            "path": scope["path"],
            "status": status,
            "model": model,
            "version": served_version,
            "rows": rows,
            "ms": round(seconds * 1000, 3),
            "client": scope["client"][0] if scope.get("client") else None,
        }
        if queued is not None:
            record["queue_ms"] = round(queued * 1000, 3)
        if error is not None:
            record["error"] = error
        state.access.write(record)
