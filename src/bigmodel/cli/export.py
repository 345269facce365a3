"""``bigmodel export MODEL_DIR --format onnx``."""

from __future__ import annotations

import argparse

from bigmodel.cli.common import add_json, emit
from bigmodel.console import kv_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="export a model directory to ONNX (checked in ONNX Runtime)")
    p.add_argument("model_dir")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--opset", type=int, default=None)
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed |ONNX - PyTorch| (default 1e-4)")
    add_json(p)
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> None:
    from bigmodel.compress import export_onnx

    result = export_onnx(args.model_dir, opset=args.opset, atol=args.atol)
    emit(args, result, lambda: [kv_table("ONNX export", result)])
