"""OpenAI-compatible ``POST /v1/completions`` and ``GET /v1/models``, for the unmodified client.

A completion request is what ``client.completions.create(...)`` sends: ``model`` (``NAME`` or
``NAME:VERSION``), ``prompt`` (a string, or a list holding one), ``max_tokens`` (default 16, as
OpenAI's), ``temperature``, ``top_p``, ``stop``, ``seed``, ``stream`` and ``stream_options``;
``top_k`` is accepted as vLLM does. Keys that would change the answer in ways this server does not
do (``n`` > 1, ``echo``, ``logprobs``, ``best_of``, penalties, ``logit_bias``, ``suffix``) are a
400 naming them rather than silently ignored. ``stream: true`` answers Server-Sent Events of
``text_completion`` chunks ending in ``data: [DONE]``; ``usage`` counts bytes (the tokens of a
byte-level model). Generation itself is shared with the OIP generate route (``serve.generate``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bigmodel.serve.extension import HTTPError, Server, json_response
from bigmodel.serve.generate import collect, first_chunk, params_from, rest, scheduler_of, submit
from bigmodel.serve.openai_common import openai_errors, served_model
from bigmodel.serve.sse import DONE, event, sse_response

OPENAI_DEFAULT_MAX_TOKENS = 16
SAMPLING = ("max_tokens", "temperature", "top_p", "top_k", "stop", "seed")
# keys accepted when they ask for what this server does anyway (OpenAI's defaults)
NEUTRAL = {
    "n": 1,
    "best_of": 1,
    "echo": False,
    "logprobs": None,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logit_bias": None,
    "suffix": None,
}
KEYS = ("model", "prompt", "stream", "stream_options", "user", *SAMPLING, *NEUTRAL)


def _check(body: dict[str, Any]) -> None:
    unknown = [k for k in body if k not in KEYS]
    if unknown:
        raise HTTPError(400, f"unknown key '{unknown[0]}' (known: {', '.join(KEYS)})")
    for key, neutral in NEUTRAL.items():
        if key in body and body[key] != neutral and not (body[key] in (None, {}) and key == "logit_bias"):
            raise HTTPError(400, f"'{key}' is not supported (only {neutral!r})")
    if not isinstance(body.get("stream", False), bool):
        raise HTTPError(400, "'stream' must be true or false")
    options = body.get("stream_options")
    if options is not None and not body.get("stream"):
        raise HTTPError(400, "'stream_options' is only allowed with 'stream': true")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise HTTPError(400, "'stream_options' may only hold 'include_usage'")


def _prompt(body: dict[str, Any]) -> Any:
    prompt = body.get("prompt")
    if prompt is None:
        raise HTTPError(400, "'prompt' is required")
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise HTTPError(
                400, f"'prompt' must be a string or a list of one string (got {len(prompt)} items)"
            )
        prompt = prompt[0]
    return prompt


def completions_routes(server: Server) -> list[BaseRoute]:
    """``/v1/completions`` over the served language models and ``/v1/models`` listing every model."""

    async def completions(request: Request) -> Response:
        body = await server.read_json(request)
        _check(body)
        sampling = {k: body[k] for k in SAMPLING if k in body and body[k] is not None}
        sampling.setdefault("max_tokens", OPENAI_DEFAULT_MAX_TOKENS)
        params = params_from(sampling, "request")
        served = served_model(server, body.get("model"), request)
        scheduler_of(served)
        seq = submit(served, _prompt(body), params, "prompt")
        try:
            first = await first_chunk(served, seq)
        except BaseException:
            scheduler_of(served).cancel(seq)
            raise
        head = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
        }

        def usage(completion: int) -> dict[str, int]:
            return {
                "prompt_tokens": seq.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": seq.prompt_tokens + completion,
            }

        if not body.get("stream"):
            text, last = await collect(request, served, seq, first)
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": last.finish_reason}
            return json_response({**head, "choices": [choice], "usage": usage(last.tokens)})

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            async for chunk in rest(served, seq, first):
                if isinstance(chunk, str):
                    yield event(
                        {"error": {"message": chunk, "type": "server_error", "param": None, "code": None}}
                    )
                    return
                choice = {
                    "text": chunk.text,
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": chunk.finish_reason,
                }
                yield event({**head, "choices": [choice]})
                if chunk.finish_reason is not None and include_usage:
                    yield event({**head, "choices": [], "usage": usage(chunk.tokens)})
            yield DONE

        return sse_response(events())

    async def models(request: Request) -> Response:
        served = [server.models.get(name) for name in server.models.names()]
        data = [
            {
                "id": s.name,
                "object": "model",
                "created": 0,
                "owned_by": "bigmodel",
                "family": s.runtime.family,
            }
            for s in served
        ]
        return json_response({"object": "list", "data": data})

    return [
        Route("/v1/completions", openai_errors(completions), methods=["POST"]),
        Route("/v1/models", openai_errors(models), methods=["GET"]),
    ]
