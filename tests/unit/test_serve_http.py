"""The request-body reader every route shares, and the API key middleware, on raw ASGI messages."""

import asyncio
import gzip
from typing import Any

import orjson
import pytest

from bigmodel.serve.auth import APIKeyMiddleware
from bigmodel.serve.http import ClientGone, HTTPError, read_body


def _receive(*messages: dict[str, Any]) -> Any:
    it = iter(messages)

    async def receive() -> dict[str, Any]:
        return next(it)

    return receive


def _read(headers: list[tuple[bytes, bytes]], *chunks: bytes, limit: int = 10) -> bytes:
    msgs = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    return asyncio.run(read_body({"headers": headers}, _receive(*msgs), limit))


def test_body_is_read_whole_and_refused_past_the_limit():
    assert _read([], b"abc", b"def") == b"abcdef"
    with pytest.raises(HTTPError, match="larger than the limit of 10 bytes") as info:
        _read([(b"content-length", b"11")], b"x")  # refused on the header, before reading
    assert info.value.status == 413
    with pytest.raises(HTTPError, match="larger than the limit") as info:
        _read([], b"123456", b"789012", b"never read")
    assert info.value.status == 413


def test_compressed_bodies_are_inflated_under_the_same_limit():
    assert _read([(b"content-encoding", b"gzip")], gzip.compress(b"{}"), limit=100) == b"{}"
    with pytest.raises(HTTPError, match="decompressed request body is larger") as info:
        _read([(b"content-encoding", b"gzip")], gzip.compress(b"x" * 1000), limit=100)
    assert info.value.status == 413
    with pytest.raises(HTTPError, match="unsupported Content-Encoding 'br'"):
        _read([(b"content-encoding", b"br")], b"x")


def test_a_client_that_hangs_up_is_not_an_error_answer():
    with pytest.raises(ClientGone):
        asyncio.run(read_body({"headers": []}, _receive({"type": "http.disconnect"}), 10))


def _call(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": headers}
    asyncio.run(app(scope, _receive(), send))
    return sent


def test_api_key_middleware_guards_all_but_health():
    seen: list[str] = []
    refused: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])

    app = APIKeyMiddleware(inner, "k", on_refused=refused.append)
    sent = _call(app, "/v2/models/iris", [(b"authorization", b"Bearer wrong")])
    assert sent[0]["status"] == 401 and (b"www-authenticate", b"Bearer") in sent[0]["headers"]
    assert "missing or wrong API key" in orjson.loads(sent[1]["body"])["error"]
    assert refused == [{"method": "GET", "path": "/v2/models/iris", "status": 401, "error": "unauthorized"}]
    assert _call(app, "/v2/models/iris", [(b"authorization", b"Bearer k")]) == []
    assert _call(app, "/v2/health/live", []) == []
    assert seen == ["/v2/models/iris", "/v2/health/live"]
