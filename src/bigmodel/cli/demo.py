"""``bigmodel demo``."""

from __future__ import annotations

import argparse

from bigmodel import console
from bigmodel.cli.common import add_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a built-in real dataset")
    p.add_argument("--workdir", help="where the demo writes (default: runs/demo-<time>)")
    p.add_argument("--workers", type=int, default=2)
    add_json(p)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> None:
    from bigmodel.demo import demo

    result = demo(args.workdir, workers=args.workers, json_mode=args.json)
    if args.json:
        console.print_json(result)
