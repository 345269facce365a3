"""Text generation over HTTP: the Open Inference Protocol's generate extension.

``POST /v2/models/{m}[/versions/{v}]/generate`` with ``{"text_input": ..., "parameters": {...}}``
answers ``{"model_name", "model_version", "text_output", "details"}``; ``.../generate_stream``
answers Server-Sent Events, one ``{"text_output": ...}`` per piece of text and a last one with
``finish_reason``. Both submit to the version's continuous-batching scheduler (``serve.lm``).

Everything that can be refused is refused before the stream starts, with a 4xx: the first event is
awaited before the response begins, so a full queue is still a 503. A failure after it is an
``{"error": ...}`` event. A client that disconnects cancels its sequence, which frees its slot at
the next decode step. ``submit`` and ``first_chunk`` serve the OpenAI completions route too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bigmodel.errors import BigModelError
from bigmodel.generation import Chunk, GenerationParams, prompt_bytes
from bigmodel.generation.scheduler import Cancelled, Failed, QueueFull, Scheduler, Timeout
from bigmodel.generation.scheduler import Request as Sequence
from bigmodel.serve.extension import HTTPError, Served, Server, json_response
from bigmodel.serve.http import ClientGone
from bigmodel.serve.sse import event, sse_response

TOP_KEYS = ("text_input", "parameters", "id")


def scheduler_of(served: Served) -> Scheduler:
    """The version's scheduler, or a 400 when it is not a language model."""
    if served.generator is None:
        raise HTTPError(
            400,
            f"model '{served.name}' is a {served.runtime.family} model; text generation needs a language model",
        )
    return served.generator


def params_from(values: Any, where: str) -> GenerationParams:
    if not isinstance(values, dict):
        raise HTTPError(400, f"'{where}' must be a JSON object")
    try:
        return GenerationParams.parse(values, where)
    except BigModelError as err:
        raise HTTPError(400, str(err)) from None


def submit(served: Served, prompt: Any, params: GenerationParams, key: str) -> Sequence:
    """Queue ``prompt`` on the version's scheduler; 400 for a bad prompt, 503 when overloaded."""
    scheduler = scheduler_of(served)
    if not isinstance(prompt, str):
        raise HTTPError(400, f"'{key}' must be a string")
    try:
        tokens = prompt_bytes(prompt)
    except BigModelError as err:
        raise HTTPError(400, f"'{key}': {err}") from None
    try:
        return scheduler.submit(tokens, params)
    except BigModelError as err:  # the prompt or max_tokens does not fit the context
        raise HTTPError(400, str(err)) from None
    except QueueFull:
        raise HTTPError(
            503,
            f"model {served.name} is overloaded: every sequence slot is busy and the queue is full; retry later",
            {"Retry-After": "1"},
        ) from None


def _http_error(served: Served, err: Exception) -> Exception:
    """What a failed sequence answers: 503 (no slot in time, or shutting down: retry), 500 (a
    failure of ours), or nothing for a client that is gone."""
    if isinstance(err, Cancelled):
        return ClientGone()
    if isinstance(err, Timeout):
        why = str(err) or f"timed out waiting for a sequence slot on model {served.name}"
        return HTTPError(503, why, {"Retry-After": "1"})
    return HTTPError(500, str(err) or "generation failed")


async def first_chunk(served: Served, seq: Sequence) -> Chunk:
    """Wait for the first piece of text (a 503 if it never got a slot in time)."""
    try:
        return await anext(seq.chunks())
    except (Timeout, Failed, Cancelled) as err:
        raise _http_error(served, err) from None


async def rest(served: Served, seq: Sequence, first: Chunk) -> AsyncIterator[Chunk | str]:
    """``first`` then the other chunks; a failure midway is yielded as its message (an str).
    Leaving early (the client went away) cancels the sequence."""
    try:
        yield first
        if first.finish_reason is None:
            async for chunk in seq.chunks():
                yield chunk
    except (Timeout, Failed, Cancelled) as err:
        yield str(err) or type(err).__name__
    finally:
        if served.generator is not None:
            served.generator.cancel(seq)


async def collect(request: Request, served: Served, seq: Sequence, first: Chunk) -> tuple[str, Chunk]:
    """The whole text of a non-streamed answer and its last chunk. A client that disconnects while
    it waits cancels the sequence at once (its slot would otherwise run to max_tokens for nobody)."""
    scheduler = scheduler_of(served)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        scheduler.cancel(seq)

    watcher = asyncio.get_running_loop().create_task(watch())
    pieces, last = [first.text], first
    try:
        if first.finish_reason is None:
            async for last in seq.chunks():
                pieces.append(last.text)
    except (Timeout, Failed, Cancelled) as err:
        raise _http_error(served, err) from None
    finally:
        watcher.cancel()
    return "".join(pieces), last


def generate_routes(server: Server) -> list[BaseRoute]:
    """OIP ``generate`` and ``generate_stream`` for every served language model."""

    async def read(request: Request) -> tuple[Served, Sequence, Chunk]:
        body = await server.read_json(request)
        unknown = [k for k in body if k not in TOP_KEYS]
        if unknown:
            raise HTTPError(400, f"unknown key '{unknown[0]}' (known: {', '.join(TOP_KEYS)})")
        if "text_input" not in body:
            raise HTTPError(400, "'text_input' is required")
        params = params_from(body.get("parameters") or {}, "parameters")
        p = request.path_params
        served = server.models.get(p["name"], p.get("version"))
        server.answered_by(request, served)
        seq = submit(served, body["text_input"], params, "text_input")
        try:
            return served, seq, await first_chunk(served, seq)
        except BaseException:
            scheduler_of(served).cancel(seq)
            raise

    async def generate(request: Request) -> Response:
        served, seq, first = await read(request)
        text, last = await collect(request, served, seq, first)
        return json_response(
            {
                "model_name": served.name,
                "model_version": served.version_str,
                "text_output": text,
                "details": {
                    "finish_reason": last.finish_reason,
                    "prompt_tokens": seq.prompt_tokens,
                    "completion_tokens": last.tokens,
                },
            }
        )

    async def generate_stream(request: Request) -> Response:
        served, seq, first = await read(request)
        head = {"model_name": served.name, "model_version": served.version_str}

        async def events() -> AsyncIterator[bytes]:
            async for chunk in rest(served, seq, first):
                if isinstance(chunk, str):
                    yield event({**head, "error": chunk})
                    return
                out: dict[str, Any] = {**head, "text_output": chunk.text}
                if chunk.finish_reason is not None:
                    out["finish_reason"] = chunk.finish_reason
                    out["details"] = {"prompt_tokens": seq.prompt_tokens, "completion_tokens": chunk.tokens}
                yield event(out)

        return sse_response(events())

    routes: list[BaseRoute] = []
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes.append(Route(f"{base}/generate", generate, methods=["POST"]))
        routes.append(Route(f"{base}/generate_stream", generate_stream, methods=["POST"]))
    return routes
