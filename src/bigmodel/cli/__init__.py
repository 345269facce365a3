"""``bigmodel``: thin verbs over the Python API. Parse, call one function, print a table or --json.

A problem with the user's input (``BigModelError``) prints one line and exits 2; argparse's own
usage errors exit 2 too. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bigmodel.errors import BigModelError


def build_parser() -> argparse.ArgumentParser:
    from bigmodel.cli import (
        compress,
        data,
        demo,
        explain,
        export,
        federated,
        online,
        predict,
        registry,
        serve,
        train,
    )

    parser = argparse.ArgumentParser(
        prog="bigmodel", description=__doc__.splitlines()[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in (data, train, export, compress, registry, serve, predict, online, federated, explain, demo):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at run time
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except BigModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        # torchrun's launcher turns SIGTERM/SIGHUP into SignalException; exit as a killed process
        # would, after stopping the workers, with one line instead of a traceback.
        sigval = getattr(err, "sigval", None)
        if type(err).__name__ != "SignalException" or sigval is None:
            raise
        print(f"interrupted by signal {int(sigval)}", file=sys.stderr)
        return 128 + int(sigval)
    return int(rc or 0)


def run() -> None:
    sys.exit(main())
