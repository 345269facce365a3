"""``bigmodel demo``."""

from __future__ import annotations

import argparse

from bigmodel import console
from bigmodel.cli.common import add_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a built-in real dataset")
    p.add_argument("--workdir", help="where the demo writes (default: runs/demo-<time>)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--part",
        choices=["all", "tabular", "text"],
        default="all",
        help="tabular: breast cancer from CSV to served, online and federated; text: a language model "
        "streamed through the openai client and int8 MiniLM embeddings (default: all)",
    )
    p.add_argument("--lm-steps", type=int, default=300, help="training steps of the text part's LM")
    add_json(p)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> None:
    if args.lm_steps < 1:
        from bigmodel.errors import BigModelError

        raise BigModelError(f"--lm-steps must be at least 1 (got {args.lm_steps})")
    from bigmodel.demo import demo

    result = demo(
        args.workdir, workers=args.workers, json_mode=args.json, part=args.part, lm_steps=args.lm_steps
    )
    if args.json:
        console.print_json(result)
