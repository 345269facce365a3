"""``bigmodel predict NAME[:VERSION|@ALIAS] --input FILE``: ask a running server, as a person would."""

from __future__ import annotations

import argparse

from bigmodel.cli.common import add_json, emit
from bigmodel.console import grid_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("predict", help="send rows from a CSV/JSON file to a model on a running server")
    p.add_argument("ref", metavar="NAME[:VERSION|@ALIAS]")
    p.add_argument(
        "--input", required=True, help="a .csv with feature columns by name, or a .json list of rows"
    )
    p.add_argument("--url", default=None, help="server URL (default: $BIGMODEL_URL or http://127.0.0.1:8000)")
    p.add_argument("--api-key", default=None, help="default: $BIGMODEL_API_KEY")
    add_json(p)
    p.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> None:
    from bigmodel.serve.client import predict

    out = predict(args.ref, args.input, url=args.url, api_key=args.api_key)

    def tables() -> list[object]:
        preds = out["predictions"]
        header = list(preds[0]) if preds else ["row"]
        title = f"{out['model']}:{out['version']} at {out['url']} ({out['rows']} rows)"
        return [grid_table(title, header, [[p[h] for h in header] for p in preds[:50]])]

    emit(args, out, tables)
