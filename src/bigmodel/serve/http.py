"""HTTP plumbing every route shares: the error type, JSON answers, and the one request-body reader.

The infer fast path (plain ASGI) and the Starlette routes read bodies through ``read_body``, so the
size limit, ``Content-Encoding`` and a client hanging up mean the same on every route.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

JSON_HEADERS = [(b"content-type", b"application/json")]


class HTTPError(Exception):
    """An answer other than 200: ``{"error": message}`` with this status (and extra headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class ClientGone(Exception):
    """The client closed the connection before its request body arrived."""


def json_response(obj: Any, status: int = 200) -> Response:
    """``obj`` as a JSON response (numpy arrays and scalars included)."""
    return Response(
        orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json"
    )


async def send_error(send: Any, err: HTTPError) -> None:
    """Answer ``err`` as ``{"error": message}`` on a raw ASGI ``send`` (outside Starlette's router)."""
    body = orjson.dumps({"error": err.message})
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


SERVED = "bigmodel.served"  # scope key: (model, version) a routed request was answered by, for metrics
BUDGET = "bigmodel.body_budget"  # the scope key under which the app puts its BodyBudget
_HELD = "bigmodel.body_bytes"


class BodyBudget:
    """Bytes of request bodies held in memory by all requests at once. A request takes from it as
    its body arrives and gives back when it ends; past ``limit`` the server answers 503 with
    Retry-After rather than buffering more (64 concurrent 8 MB bodies once took 916 MB)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def take(self, scope: Any, n: int) -> None:
        if self.used + n > self.limit:
            raise HTTPError(
                503,
                f"the server is holding {self.used} bytes of request bodies (limit {self.limit}); retry",
                {"Retry-After": "1"},
            )
        self.used += n
        scope[_HELD] = scope.get(_HELD, 0) + n

    def release(self, scope: Any) -> None:
        self.used -= scope.pop(_HELD, 0)


def _take(scope: Any, n: int) -> None:
    budget = scope.get(BUDGET)
    if budget is not None:
        budget.take(scope, n)


def _too_big(limit: int) -> HTTPError:
    return HTTPError(413, f"request body is larger than the limit of {limit} bytes")


async def read_body(scope: Mapping[str, Any], receive: Any, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 before buffering more), gzip / deflate
    bodies (tritonclient's request_compression_algorithm) decompressed under the same limit."""
    encoding = None
    for k, v in scope["headers"]:
        if k == b"content-length" and v.isdigit() and (len(v) > 18 or int(v) > limit):
            raise _too_big(limit)  # refused before a byte is read
        if k == b"content-encoding" and v not in (b"identity", b""):
            encoding = v.decode("latin-1").lower()
    msg = await receive()
    if msg["type"] == "http.disconnect":
        raise ClientGone()
    body: bytes = msg.get("body", b"")
    _take(scope, len(body))
    if msg.get("more_body", False) or len(body) > limit:
        chunks, size = [body], len(body)
        while msg.get("more_body", False):
            if size > limit:  # whatever Content-Length said
                break
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise ClientGone()
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            _take(scope, len(chunks[-1]))
        if size > limit:
            raise _too_big(limit)
        body = b"".join(chunks)
    if encoding is None:
        return body
    out = _decompress(body, encoding, limit)
    _take(scope, len(out))
    return out


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding not in ("gzip", "deflate"):
        raise HTTPError(400, f"unsupported Content-Encoding {encoding!r} (use gzip or deflate)")
    d = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as err:
        raise HTTPError(400, f"cannot decompress the {encoding} request body: {err}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise HTTPError(413, f"decompressed request body is larger than the limit of {limit} bytes")
    if not d.eof:  # zlib returns what it could: a cut-off stream must not pass as a shorter body
        raise HTTPError(400, f"the {encoding} request body is truncated")
    return out


async def read_json_object(request: Request, limit: int, *, empty_ok: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, read by ``read_body`` (413 beyond ``limit``), else a 400.

    ``empty_ok``: no body at all reads as ``{}`` (the repository extension's bodies are optional).
    """
    raw = await read_body(request.scope, request.receive, limit)
    if not raw and empty_ok:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise HTTPError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "request body must be a JSON object")
    return body
