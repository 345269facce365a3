"""Text generation in-process: ``generate(model, prompt)`` and ``stream(...)``, one sequence.

The model is byte-level: the prompt is its UTF-8 bytes, each step samples one byte with the KV
cache holding every earlier one, and text comes out only in whole characters (``TextStream``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from bigmodel.errors import BigModelError
from bigmodel.generation.engine import Engine, language_model
from bigmodel.generation.params import GenerationParams
from bigmodel.generation.sampling import new_generator, sample
from bigmodel.generation.text import TextStream


@dataclass
class Chunk:
    """A piece of generated text; the last chunk of a stream has ``finish_reason`` set."""

    text: str
    tokens: int  # new tokens generated so far
    finish_reason: str | None = None  # "stop" (a stop string) | "length" (max_tokens or context)


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def prompt_bytes(prompt: str | bytes) -> list[int]:
    """The tokens of a prompt: its UTF-8 bytes; an empty prompt is an error."""
    try:
        data = prompt.encode("utf-8") if isinstance(prompt, str) else bytes(prompt)
    except UnicodeEncodeError:  # a command line's undecodable bytes arrive as lone surrogates
        raise BigModelError("the prompt is not valid UTF-8 text") from None
    if not data:
        raise BigModelError("the prompt is empty (a byte-level model needs at least one byte to continue)")
    return list(data)


def load_language_model(ref: str | os.PathLike[str] | nn.Module, registry: str | None = None) -> nn.Module:
    """A model directory or registry reference (``NAME[:VERSION|@ALIAS]``) -> its verified LM module."""
    if isinstance(ref, nn.Module):
        return language_model(ref)
    from bigmodel.artifacts import load_model
    from bigmodel.registry import model_dir

    path = model_dir(ref, registry)
    loaded = load_model(Path(path))
    name = loaded.meta.architecture.get("name")
    if name != "transformer":
        raise BigModelError(f"{path} is a {name} model; text generation needs a transformer language model")
    return loaded.module.eval()


def stream(
    model: nn.Module | str | os.PathLike[str], prompt: str | bytes, params: GenerationParams | None = None
) -> Iterator[Chunk]:
    """Generate from ``prompt``, yielding text as whole characters become available."""
    params = params or GenerationParams()
    module = load_language_model(model)
    tokens = prompt_bytes(prompt)
    engine = Engine(module, slots=1)
    budget = params.budget(len(tokens), engine.context)
    gen, text = new_generator(params.seed), TextStream(params.stop)
    logits = engine.prefill(0, tokens)
    for n in range(1, budget + 1):
        tok = sample(logits, params, gen)
        piece = text.push(tok)
        if text.stopped:
            yield Chunk(piece, n, "stop")
            return
        if n == budget:
            yield Chunk(piece + text.finish(), n, "length")
            return
        if piece:
            yield Chunk(piece, n)
        logits = engine.decode({0: (tok, len(tokens) + n - 1)})[0]


def generate(
    model: nn.Module | str | os.PathLike[str], prompt: str | bytes, params: GenerationParams | None = None
) -> Completion:
    """The whole completion of ``prompt`` (see ``stream``)."""
    pieces, last = [], Chunk("", 0, "length")
    for last in stream(model, prompt, params):
        pieces.append(last.text)
    return Completion("".join(pieces), last.finish_reason or "length", len(prompt_bytes(prompt)), last.tokens)
