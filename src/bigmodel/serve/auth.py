"""The API key check, as pure ASGI middleware (Starlette's style: wrap an app, call it or answer).

It wraps the whole server, the infer fast path included, so no route (core, infer or extension)
can forget it; health stays open so that probes need no secret.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from bigmodel.serve.http import HTTPError, send_error

UNAUTHORIZED = HTTPError(
    401, "missing or wrong API key: send 'Authorization: Bearer KEY'", {"WWW-Authenticate": "Bearer"}
)


class APIKeyMiddleware:
    """Answers 401 to HTTP requests without ``Authorization: Bearer <api_key>`` (health excepted);
    ``on_refused`` gets an access-log record for each (the wrapped app never sees them)."""

    def __init__(
        self,
        app: Callable[..., Any],
        api_key: str,
        on_refused: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.app = app
        self.expected = api_key.encode()
        self.on_refused = on_refused

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/v2/health/"):
            return await self.app(scope, receive, send)
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, token = given.strip().partition(b" ")
        # RFC 7235: the scheme is case-insensitive ("bearer KEY" is as valid as "Bearer KEY")
        ok = scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.expected)
        if ok:  # compare_digest: constant time, the key is not guessable by timing
            return await self.app(scope, receive, send)
        await send_error(send, UNAUTHORIZED)
        if self.on_refused is not None:
            self.on_refused(
                {"method": scope["method"], "path": scope["path"], "status": 401, "error": "unauthorized"}
            )
