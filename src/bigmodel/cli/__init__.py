"""``bigmodel``: thin verbs over the Python API. Parse, call one function, print a table or --json.

A problem with the user's input (``BigModelError``, or a flag argparse rejects) prints one line
and exits 2; with --json, stdout's last line is then ``{"error": ...}``. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from bigmodel.errors import BigModelError


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other bad input (it would print the whole
    usage first). Subcommand parsers are made of this class too."""

    def error(self, message: str) -> NoReturn:
        raise BigModelError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    from bigmodel.cli import (
        compress,
        data,
        demo,
        explain,
        export,
        federated,
        generate,
        online,
        predict,
        registry,
        serve,
        train,
        tune,
    )

    parser = _Parser(prog="bigmodel", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in (
        data,
        train,
        tune,
        export,
        compress,
        registry,
        serve,
        predict,
        generate,
        online,
        federated,
        explain,
        demo,
    ):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at run time
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        rc = args.func(args)
    except BigModelError as err:
        # One line, even for an error re-raised from a DataLoader worker with its traceback.
        message = str(err).strip().splitlines()[-1].removeprefix("bigmodel.errors.BigModelError: ")
        print(f"error: {message}", file=sys.stderr)
        if "--json" in argv:
            from bigmodel.console import print_json

            print_json({"error": message})
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # the machine's refusal (a full disk, a permission): its words, one line
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except Exception as err:
        if type(err).__module__.startswith("botocore"):  # object storage (s3fs): no credentials, no endpoint
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"error: object storage: {first}", file=sys.stderr)
            return 2
        # torchrun's launcher turns SIGTERM/SIGHUP into SignalException; exit as a killed process
        # would, after stopping the workers, with one line instead of a traceback.
        sigval = getattr(err, "sigval", None)
        if type(err).__name__ != "SignalException" or sigval is None:
            raise
        print(f"interrupted by signal {int(sigval)}", file=sys.stderr)
        return 128 + int(sigval)
    return int(rc or 0)


def run() -> None:
    """The ``bigmodel`` console script and ``python -m bigmodel``."""
    from bigmodel.stop import exit_process

    exit_process(main())
