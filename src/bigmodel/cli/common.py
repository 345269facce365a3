"""Pieces every verb shares: the --json flag and the result printer."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from bigmodel import console


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as one JSON line on stdout")


def emit(args: argparse.Namespace, result: Any, tables: Callable[[], list[Any]]) -> None:
    """--json: tables to stderr, the JSON object as the last stdout line; else tables to stdout."""
    console.show(*tables(), json_mode=args.json)
    if args.json:
        console.print_json(result)


def int_list(text: str) -> list[int]:
    """``"64,32"`` -> [64, 32]; argparse turns the ValueError into a usage error (exit 2)."""
    try:
        values = [int(v) for v in text.split(",")]  # "10,,10" is a typo, not [10, 10]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values
