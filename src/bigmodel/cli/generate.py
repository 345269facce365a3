"""``bigmodel generate MODEL --prompt TEXT``: continue a prompt with a language model, in-process."""

from __future__ import annotations

import argparse
import sys
import time

from bigmodel import console
from bigmodel.cli.common import add_json
from bigmodel.console import kv_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("generate", help="continue a prompt with a transformer LM (directory or registry ref)")
    p.add_argument("model", metavar="MODEL", help="a model directory or NAME[:VERSION|@ALIAS]")
    p.add_argument("--prompt", required=True, help="the text to continue (UTF-8)")
    p.add_argument(
        "--max-tokens", type=int, default=None, help="new bytes at most (default 128, or the context's end)"
    )
    p.add_argument("--temperature", type=float, default=1.0, help="0: greedy (default 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling, in (0, 1] (default 1: off)")
    p.add_argument(
        "--top-k", type=int, default=0, help="sample among the k most likely bytes (default 0: off)"
    )
    p.add_argument(
        "--stop", action="append", default=None, metavar="S", help="stop before this string (repeatable)"
    )
    p.add_argument("--seed", type=int, default=None, help="the same seed gives the same text")
    p.add_argument("--registry", default=None, help="registry for NAME refs (default $BIGMODEL_REGISTRY)")
    add_json(p)
    p.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> None:
    from bigmodel.generation import GenerationParams, load_language_model, prompt_bytes, stream

    params = GenerationParams.parse(
        {
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "top_k": args.top_k,
            "stop": args.stop,
            "seed": args.seed,
        },
        where="generate",
    )
    module = load_language_model(args.model, args.registry)
    t0 = time.perf_counter()
    pieces, tokens, finish = [], 0, "length"
    show = not args.json and sys.stdout.isatty()
    if show:  # people watch it appear; scripts get it at once
        print(args.prompt, end="", flush=True)
    for chunk in stream(module, args.prompt, params):
        pieces.append(chunk.text)
        tokens, finish = chunk.tokens, chunk.finish_reason or finish
        if show:
            print(chunk.text, end="", flush=True)
    seconds = time.perf_counter() - t0
    if show:
        print()
    result = {
        "model": str(args.model),
        "prompt": args.prompt,
        "text": "".join(pieces),
        "finish_reason": finish,
        "prompt_tokens": len(prompt_bytes(args.prompt)),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
    }
    if not show and not args.json:
        print(args.prompt + result["text"])
    stats = {k: result[k] for k in ("finish_reason", "prompt_tokens", "completion_tokens", "tokens_per_s")}
    # the figures go to stderr: stdout keeps the text (``> out.txt``), or the JSON line
    console.show(kv_table("generation", stats), json_mode=True)
    if args.json:
        console.print_json(result)
