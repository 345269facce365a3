"""``POST /v1/embeddings``: OpenAI-compatible embeddings from a served sentence encoder.

A route group on the public seam (``bigmodel.serve.extension``), mounted by default. The request is
what the official ``openai`` client sends::

    {"model": "minilm" | "minilm:2", "input": "a sentence" | ["a sentence", ...],
     "encoding_format": "float" | "base64", "user": "..."}

and the answer is OpenAI's list of ``{"object": "embedding", "index": i, "embedding": ...}`` with
``usage`` counting the tokens the model read (special tokens included, after truncation). The
client asks for ``base64`` by default: each embedding is then its little-endian float32 bytes,
base64-encoded. Sentences go through the version's batcher like OIP infer requests, so concurrent
requests of either route share forward passes; a full queue is a 503 with Retry-After.

Refused with a 400 naming the key: token-id inputs (this server tokenizes itself, with the model's
own tokenizer), ``dimensions`` (the model's size is fixed), unknown keys, an empty input, more
strings than ``--max-batch-size``, and a model that is not a sentence encoder. Errors take OpenAI's
shape, ``{"error": {"message": ..., "type": ..., "param": null, "code": null}}``, which the openai
client shows as the exception's message (a plain ``{"error": "..."}`` would read "Error code: 400").
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bigmodel.serve.batcher import QueueFull, Timeout
from bigmodel.serve.encoder import EMBEDDING, TOKENS
from bigmodel.serve.extension import HTTPError, Server, json_response
from bigmodel.serve.openai_common import openai_errors, served_model
from bigmodel.serve.text_tensor import as_rows, check_texts

ROUTE = "embeddings"  # the route group name a family lists in ``supports.routes``
KEYS = ("model", "input", "encoding_format", "user")
FORMATS = ("float", "base64")


def _bad(message: str) -> HTTPError:
    return HTTPError(400, message)


def _texts(value: Any, model: str, max_rows: int) -> list[str]:
    """``input`` as a list of strings, else a 400 saying what is wrong with it."""
    if value is None:
        raise _bad("'input' is required: a string or a list of strings")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise _bad("'input' must be a string or a list of strings")
    if not texts:
        raise _bad("'input' is an empty list; send at least one string")
    if any(isinstance(v, list) or (isinstance(v, int) and not isinstance(v, bool)) for v in texts):
        raise _bad(
            "'input' holds token ids; this server takes text only (it tokenizes with the model's tokenizer)"
        )
    if len(texts) > max_rows:
        raise _bad(f"'input' has {len(texts)} strings; model {model} takes at most {max_rows} per request")
    return check_texts(texts, "'input'")


def _check_keys(body: dict[str, Any]) -> None:
    if "dimensions" in body:
        raise _bad("'dimensions' is not supported: each model gives embeddings of its own fixed size")
    unknown = [k for k in body if k not in KEYS]
    if unknown:
        raise _bad(f"unknown key '{unknown[0]}' (known: {', '.join(KEYS)})")
    if body.get("encoding_format", "float") not in FORMATS:
        raise _bad(f"'encoding_format' must be one of {', '.join(FORMATS)}, got {body['encoding_format']!r}")
    if not isinstance(body.get("user", ""), str):
        raise _bad("'user' must be a string")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _bad("'model' must be a model name: NAME or NAME:VERSION")


def _encode(e: np.ndarray, fmt: str) -> Any:
    """One embedding as the client asked: a JSON list, or base64 of little-endian float32 bytes."""
    if fmt == "base64":
        return base64.b64encode(np.ascontiguousarray(e, dtype="<f4").tobytes()).decode("ascii")
    return e


def embeddings_routes(server: Server) -> list[BaseRoute]:
    """The ``/v1/embeddings`` route over the server's sentence encoders."""

    async def answer(request: Request) -> Response:
        body = await server.read_json(request)
        _check_keys(body)
        served = served_model(server, body["model"], request)  # unknown: a 404 naming what is served
        name = served.name
        rt = served.runtime
        if ROUTE not in rt.routes or served.batcher is None:
            raise _bad(
                f"model '{body['model']}' is a {rt.family} model; /v1/embeddings needs a sentence encoder"
            )
        batcher = served.batcher
        texts = _texts(body.get("input"), name, batcher.max_batch_size)
        timeout = server.timeout_s
        # no await between the look-up and the submit: the version cannot be released in between
        try:
            fut = batcher.submit(as_rows(texts), timeout)
        except QueueFull:
            raise HTTPError(
                503,
                f"model {name} is overloaded: too many requests queued; retry later",
                {"Retry-After": "1"},
            ) from None
        try:
            results, _ = await fut
        except Timeout:
            raise HTTPError(
                503, f"request timed out after {timeout:g} s waiting for model {name}", {"Retry-After": "1"}
            ) from None
        fmt = body.get("encoding_format", "float")
        emb, tokens = results[EMBEDDING], int(results[TOKENS].sum())
        data = [{"object": "embedding", "index": i, "embedding": _encode(e, fmt)} for i, e in enumerate(emb)]
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": served.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    return [Route("/v1/embeddings", openai_errors(answer), methods=["POST"])]
