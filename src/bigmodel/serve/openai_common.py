"""What the OpenAI-compatible routes share: error answers in OpenAI's shape, and model names.

The official ``openai`` client shows ``error.message`` of ``{"error": {"message", "type", "param",
"code"}}`` as its exception's text (a plain ``{"error": "..."}`` reads "Error code: 400"), so the
/v1 routes answer errors in that shape; every other route keeps ``{"error": "..."}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from bigmodel.serve.extension import HTTPError, ModelNotFound, Served, Server, json_response


def openai_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error as OpenAI's API words it (still one line, under an "error" key)."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    response = json_response(body, status)
    response.headers.update(headers or {})
    return response


def openai_errors(
    answer: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A handler whose ``HTTPError`` and unknown models answer in OpenAI's error shape."""

    async def handler(request: Request) -> Response:
        try:
            return await answer(request)
        except HTTPError as err:
            return openai_error(err.status, err.message, err.headers)
        except ModelNotFound as err:
            return openai_error(404, str(err))

    return handler


def served_model(server: Server, model: object, request: Request | None = None) -> Served:
    """The version a request's ``model`` names: ``NAME`` (the one served for it) or ``NAME:VERSION``."""
    if not isinstance(model, str) or not model:
        raise HTTPError(400, "'model' must be a model name: NAME or NAME:VERSION")
    name, _, version = model.partition(":")
    served = server.models.get(name, version or None)
    if request is not None:
        server.answered_by(request, served)
    return served
