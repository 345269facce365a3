"""``bigmodel export MODEL_DIR --format onnx``: ONNX with a dynamic batch dimension, checked against
PyTorch in ONNX Runtime before it is kept.

The file lands in the model directory as ``model.onnx`` and model.json records it (hash in
``files``; input/output names and the measured difference under ``onnx``), so the registry copies it
and the server can run it with ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bigmodel import artifacts, onnxrt
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_path
from bigmodel.models import parse_architecture
from bigmodel.models.layers import Int8Linear

ONNX_FILE = "model.onnx"
INPUT, OUTPUT = "input", "logits"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def exporter_error(err: BaseException) -> str:
    """One plain line from an exporter (or ONNX Runtime) failure: the underlying cause where the
    message gives one (the dynamo exporter's is paragraphs of next steps in terminal colours)."""
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith("<class ")]
    line = causes[0] if causes else lines[0] if lines else type(err).__name__
    return re.sub(r"^<class '(?:[\w.]+\.)?(\w+)'>: ", r"\1: ", line)


def export_module(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    dst: Path,
    *,
    input_names: list[str],
    output_name: str,
    dynamic_shapes: tuple[dict[int, Any], ...],
    opset: int | None = None,
) -> None:
    """torch.export -> ONNX (dynamo exporter), one file at ``dst``."""
    # The dynamo exporter prints progress to stdout and logs that torchvision (which we never use)
    # is missing; keep stdout for the CLI's result and stderr for real problems.
    # An opset below 18 goes through a version converter that logs its own failure as a traceback;
    # the caller checks the opset it got and says so in one line.
    for name in ("torch.onnx._internal.exporter._registration", "torch.onnx._internal.exporter._compat"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("onnxscript.version_converter").setLevel(logging.CRITICAL)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=input_names,
            output_names=[output_name],
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            verbose=False,
        )
        assert program is not None
        # Models below 2 GB fit in one file; one file is one artifact to hash, copy and serve.
        program.save(str(dst), external_data=False)


def _export(module: torch.nn.Module, sample: torch.Tensor, dst: Path, opset: int | None) -> None:
    export_module(
        module,
        (sample,),
        dst,
        input_names=[INPUT],
        output_name=OUTPUT,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset=opset,
    )
    _drop_provenance(dst)


def _drop_provenance(path: Path) -> None:
    """Drop the exporter's per-node provenance (stack traces with local file paths) and shape
    annotations (ONNX Runtime infers them): kilobytes that nobody serves, more than the weights of
    a small model, which would make the exported model look several times its size."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    onnx.save(model, str(path))


def max_abs_diff(module: torch.nn.Module, onnx_path: Path, inputs: list[torch.Tensor]) -> float:
    """Largest |ONNX Runtime - PyTorch| over the given input batches."""
    try:
        session = onnxrt.session(onnx_path, 0)  # 0: ONNX Runtime picks the thread count
    except Exception as err:  # ORT raises its own exception types (NotImplemented, Fail, ...)
        raise BigModelError(f"ONNX Runtime cannot run the exported model: {exporter_error(err)}") from None
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            ref = module(x).float().numpy()
            got = session.run([OUTPUT], {INPUT: x.numpy()})[0]
            if got.shape != ref.shape:
                raise BigModelError(f"ONNX output shape {got.shape} differs from PyTorch's {ref.shape}")
            worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def export_onnx(model_dir: str | Path, *, opset: int | None = None, atol: float = 1e-4) -> dict[str, Any]:
    """Export a model directory to ONNX in place; refuse (and keep nothing) if it differs by > atol.
    Exporting again replaces the model.onnx an earlier export wrote, never a file it did not."""
    import onnx

    if not math.isfinite(atol) or atol < 0:
        raise BigModelError(f"--atol must be a number >= 0, got {atol}")
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not 1 <= opset <= newest:
        raise BigModelError(f"--opset {opset} is not an ONNX opset this onnx knows (1-{newest})")
    path = Path(model_dir)
    loaded = artifacts.load_model(path)
    meta = loaded.meta
    if (path / ONNX_FILE).exists() and ONNX_FILE not in meta.files:
        raise BigModelError(
            f"{path / ONNX_FILE} exists but {artifacts.META} does not record it (not written by "
            "bigmodel export); move it away first (nothing was overwritten)"
        )
    if (getattr(meta, "onnx", None) or {}).get("quantized"):
        raise BigModelError(
            f"{path} holds a quantized ONNX model (bigmodel compress quantize); export its source instead"
        )
    arch = parse_architecture(meta.architecture)
    if not arch.supports.onnx_export:
        raise BigModelError(
            f"cannot export {path} to ONNX: bigmodel export handles single-input models, not a {arch.name}"
        )
    _check_exportable(path, meta, loaded.module)
    mean, std = meta.preprocessing.get("mean"), meta.preprocessing.get("std")
    sample = arch.example_inputs(2, mean=mean, std=std)[0]
    checks = [arch.example_inputs(b, mean=mean, std=std)[0] for b in (1, 3, 64)]
    with atomic_path(path / ONNX_FILE) as tmp:
        try:
            _export(loaded.module, sample, tmp, opset)
        except (RuntimeError, ValueError, TypeError) as err:  # torch.export's failures for unsupported code
            raise BigModelError(f"cannot export {path} to ONNX: {exporter_error(err)}") from None
        opset_used = next(
            o.version
            for o in onnx.load(str(tmp), load_external_data=False).opset_import
            if o.domain in ("", "ai.onnx")
        )
        if opset is not None and opset_used != opset:
            raise BigModelError(
                f"cannot export {path} at --opset {opset}: the exporter writes opset {opset_used} and "
                "could not convert it (try 18 or newer); not kept"
            )
        diff = max_abs_diff(loaded.module, tmp, checks)
        if diff > atol:
            raise BigModelError(f"ONNX output differs from PyTorch by {diff:.3g} > {atol:g}; not kept")
    info = {
        "file": ONNX_FILE,
        "input": INPUT,
        "output": OUTPUT,
        "opset": opset_used,
        "max_abs_diff": diff,
        "dynamic_batch": True,
    }
    artifacts.add_files(path, [ONNX_FILE], onnx=info)
    return {"model_dir": str(path), **info, "bytes": (path / ONNX_FILE).stat().st_size}


def _check_exportable(path: Path, meta: artifacts.ModelMeta, module: torch.nn.Module) -> None:
    """Refuse, in one line, the compressed forms that ONNX Runtime cannot run as PyTorch runs them.

    bfloat16: ONNX Runtime's CPU kernels have no bfloat16 arithmetic, and a float32 export would be
    another model (float32 activations, twice the weight bytes) served in this one's name.
    Int8Linear (``quantize --backend torch``): ATen's int8 GEMM has no ONNX operator, and ONNX
    Runtime's own int8 MatMul quantizes activations differently, so the outputs could not match;
    ``quantize --backend onnxruntime`` makes the int8 ONNX model (the same int8 weights) instead."""
    parent = (meta.lineage.parent or {}).get("path")
    source = f" ({parent})" if parent else ""
    if any(t.dtype == torch.bfloat16 for t in [*module.parameters(), *module.buffers()]):
        raise BigModelError(
            f"cannot export {path} to ONNX: its weights are bfloat16, which ONNX Runtime on CPU does not "
            f"run; serve it with PyTorch, or export the float32 model it came from{source}"
        )
    int8 = [name for name, m in module.named_modules() if isinstance(m, Int8Linear)]
    if int8 and meta.architecture.get("name") == "transformer":
        raise BigModelError(
            f"cannot export {path} to ONNX: an int8 language model runs on PyTorch's int8 kernels, which "
            "ONNX has no operator for; generation and `bigmodel serve` run it with PyTorch as it is"
        )
    if int8:
        raise BigModelError(
            f"cannot export {path} to ONNX: its int8 layers ({', '.join(int8)}) run on PyTorch's int8 "
            "kernels (quantize --backend torch), which ONNX has no operator for; quantize the float32 "
            f"model{source} with --backend onnxruntime for an int8 ONNX model"
        )
