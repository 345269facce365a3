"""int8 quantization engines: the one place that decides which library does the work.

Two backends, both on paths that will live (``torch.ao.quantization`` is deprecated in torch 2.13):

- ``onnxruntime`` (the fast one): ONNX Runtime's quantizer, ``quantize_dynamic`` (int8 weights per
  channel, activations quantized at run time, fused into ``DynamicQuantizeMatMul`` by the runtime)
  or ``quantize_static`` (QDQ format, activation ranges calibrated on training batches). The model
  is exported with its int8 layers as float "twins" holding the dequantized weights, so ONNX
  Runtime's per-channel quantizer recovers exactly our int8 bytes; ``share_weights`` then points
  the ONNX initializers at those bytes inside model.safetensors (ONNX external data), so the
  directory holds each int8 weight once and both runtimes read the same bytes.
- ``torch``: ``Int8Linear`` modules (bigmodel.models.layers) on ATen's int8 GEMM; no ONNX file.

Layers are named by module path (``net.2``); ONNX nodes are found through their weight names.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bigmodel import artifacts
from bigmodel.compress.export import export_module, exporter_error
from bigmodel.compress.timing import latencies, ort_session
from bigmodel.errors import BigModelError
from bigmodel.models.layers import Int8Linear, MatMulLinear, replace_module

BACKENDS = ("onnxruntime", "torch")
TWIN_SUFFIX = ".weight_t"


# --- calibration and SmoothQuant ---------------------------------------------------------------


@torch.no_grad()
def calibrate(
    model: nn.Module, paths: list[str], batches: Iterable[tuple[torch.Tensor, ...]]
) -> tuple[dict[str, torch.Tensor], list[list[str]]]:
    """Per-input-channel max |x| seen by each Linear at ``paths`` over ``batches``, and the groups of
    layers that read the very same input tensor (e.g. attention's query, key and value)."""
    amax: dict[str, torch.Tensor] = {}
    # input tensor id -> (the tensor, kept alive so that its id is not reused, readers)
    readers: dict[int, tuple[torch.Tensor, list[str]]] = {}

    def hook(path: str) -> Any:
        def f(_m: nn.Module, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            x = inp[0].detach().float()
            cur = x.abs().reshape(-1, x.shape[-1]).amax(dim=0)  # (in,)
            amax[path] = torch.maximum(amax[path], cur) if path in amax else cur
            _, group = readers.setdefault(id(inp[0]), (inp[0], []))
            if path not in group:
                group.append(path)

        return f

    handles = [model.get_submodule(p).register_forward_hook(hook(p)) for p in paths]
    try:
        model.eval()
        for args in batches:
            readers.clear()  # tensor ids are only meaningful within one forward pass
            model(*args)
    finally:
        for h in handles:
            h.remove()
    groups = [g for _, g in readers.values()]
    grouped = {p for g in groups for p in g}
    groups += [[p] for p in paths if p not in grouped]
    return amax, groups


def smooth_factors(
    model: nn.Module, amax: dict[str, torch.Tensor], groups: list[list[str]], alpha: float
) -> dict[str, torch.Tensor]:
    """SmoothQuant (Xiao et al. 2023): s_j = max|x_j|^alpha / max|W_j|^(1-alpha) per input channel;
    layers that share an input share s, so their inputs are scaled (and quantized) once."""
    out: dict[str, torch.Tensor] = {}
    for group in groups:
        x = torch.stack([amax[p] for p in group]).amax(dim=0).clamp(min=1e-5)
        w = torch.stack([_linear(model, p).weight.detach().abs().amax(dim=0) for p in group]).amax(dim=0)
        s = (x.pow(alpha) / w.clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)
        for p in group:
            out[p] = s
    return out


@torch.no_grad()
def input_scales(amax: dict[str, torch.Tensor], smooth: dict[str, torch.Tensor]) -> dict[str, float]:
    """Static int8: one symmetric activation scale per layer from the calibrated range."""
    return {
        p: max(float((a / smooth[p]).max() if p in smooth else a.max()), 1e-8) / 127 for p, a in amax.items()
    }


# --- torch backend -----------------------------------------------------------------------------


def to_int8(
    model: nn.Module,
    paths: list[str],
    *,
    smooth: dict[str, torch.Tensor] | None = None,
    static_scales: dict[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """Swap the Linear layers at ``paths`` for ``Int8Linear`` in place; return ``arch["compact"]``."""
    smooth, layers = smooth or {}, {}
    for p in paths:
        lin = model.get_submodule(p)
        if not isinstance(lin, nn.Linear):
            raise BigModelError(
                f"layer '{p}' is {type(lin).__name__}: int8 quantization handles Linear layers"
            )
        scale = static_scales.get(p) if static_scales is not None else None
        replace_module(model, p, Int8Linear.from_linear(lin, smooth=smooth.get(p), input_scale=scale))
        layers[p] = {"kind": "int8", "static": scale is not None, "smooth": p in smooth}
    return layers


# --- ONNX Runtime backend ----------------------------------------------------------------------


def float_twin(
    model: nn.Module, paths: list[str], smooth: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """A copy of ``model`` whose layers at ``paths`` are ``MatMulLinear``: float weights (dequantized
    ones for Int8Linear layers) laid out (in, out) as ONNX MatMul wants, smoothing kept explicit."""
    twin = copy.deepcopy(model).eval()
    for p in paths:
        m = twin.get_submodule(p)
        if isinstance(m, Int8Linear):
            replace_module(twin, p, MatMulLinear.from_int8(m))
        elif isinstance(m, nn.Linear):
            s = (smooth or {}).get(p)
            w = m.weight.detach().float() * (s[None, :] if s is not None else 1.0)  # (out, in)
            bias = m.bias.detach() if m.bias is not None else torch.zeros(m.out_features)
            replace_module(twin, p, MatMulLinear(w.t(), bias, None if s is None else 1.0 / s))
    return twin


def float_weights(
    model: nn.Module, paths: list[str], smooth: dict[str, torch.Tensor] | None = None
) -> dict[str, np.ndarray]:
    """The float ``weight_t`` initializer of each layer's twin, by initializer name: what a layer
    kept in float gets back in place of its dequantized weight (see ``with_float_layers``)."""
    twin = float_twin(model, paths, smooth)
    out = {}
    for p in paths:
        m = twin.get_submodule(p)
        assert isinstance(m, MatMulLinear)
        out[p + TWIN_SUFFIX] = m.weight_t.numpy()
    return out


def _linear(model: nn.Module, path: str) -> nn.Linear:
    m = model.get_submodule(path)
    if not isinstance(m, nn.Linear):
        raise BigModelError(f"layer '{path}' is {type(m).__name__}: int8 quantization handles Linear layers")
    return m


def export_twin(
    twin: nn.Module,
    args: tuple[torch.Tensor, ...],
    dst: Path,
    *,
    input_names: list[str],
    output_name: str,
    dynamic_shapes: tuple[dict[int, Any], ...],
) -> None:
    try:
        export_module(
            twin, args, dst, input_names=input_names, output_name=output_name, dynamic_shapes=dynamic_shapes
        )
    except (RuntimeError, ValueError, TypeError) as err:
        raise BigModelError(f"cannot export the model to ONNX: {exporter_error(err)}") from None


def matmul_nodes(onnx_path: Path) -> dict[str, str]:
    """Module path -> name of the ONNX MatMul node that multiplies by its ``weight_t``."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name for i in graph.initializer}
    found = {}
    for node in graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            name = node.input[1]
            if name.endswith(TWIN_SUFFIX):
                found[name.removesuffix(TWIN_SUFFIX)] = node.name
    return found


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of input dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def ort_quantize(
    float_onnx: Path,
    dst: Path,
    *,
    method: str,
    nodes: list[str],
    calibration: list[dict[str, np.ndarray]] | None = None,
) -> None:
    """Quantize the MatMul ``nodes`` of ``float_onnx`` into ``dst``: int8 weights per channel,
    symmetric; activations uint8 (u8s8 is what VNNI CPUs run fastest)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # "consider pre-processing"
    if not nodes:
        dst.write_bytes(float_onnx.read_bytes())
        return
    if method == "dynamic":
        quantize_dynamic(
            float_onnx,
            dst,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
            extra_options={"MatMulConstBOnly": True},
        )
    elif method == "static":
        quantize_static(
            float_onnx,
            dst,
            _Reader(calibration or []),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
            extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True},
        )
    else:
        raise BigModelError(f"ONNX Runtime int8 has no method {method!r} (dynamic, static)")


# --- one copy of each weight -------------------------------------------------------------------

_ST_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "I8": np.int8,
    "U8": np.uint8,
    "I32": np.int32,
    "I64": np.int64,
}


def share_weights(onnx_path: Path, weights: Path, *, min_bytes: int = 128) -> int:
    """Point every large ONNX initializer whose bytes also sit in the safetensors file ``weights``
    (same dtype, same bytes) at them as ONNX external data; return the bytes no longer duplicated.

    Both files must stay side by side (model.json hashes both)."""
    import onnx
    from onnx import numpy_helper

    raw = weights.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    index: dict[tuple[str, str], tuple[int, int]] = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] not in _ST_DTYPES:
            continue
        start, end = info["data_offsets"]
        key = (
            np.dtype(_ST_DTYPES[info["dtype"]]).str,
            hashlib.sha256(raw[base + start : base + end]).hexdigest(),
        )
        index[key] = (base + start, end - start)
    model = onnx.load(str(onnx_path))
    # The exporter's per-node provenance (stack traces with local file paths) is kilobytes of
    # bytes nobody serves: drop it with the shape annotations ONNX Runtime infers anyway.
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    saved = 0
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.nbytes < min_bytes:
            continue
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        hit = index.get((arr.dtype.newbyteorder("<").str, hashlib.sha256(data).hexdigest()))
        if hit is None:
            continue
        offset, length = hit
        init.ClearField("raw_data")
        for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            init.ClearField(field)
        init.data_location = onnx.TensorProto.EXTERNAL
        del init.external_data[:]
        for k, v in (("location", weights.name), ("offset", str(offset)), ("length", str(length))):
            entry = init.external_data.add()
            entry.key, entry.value = k, v
        saved += length
    with tempfile.NamedTemporaryFile(dir=onnx_path.parent, suffix=".onnx", delete=False) as tmp:
        tmp.write(model.SerializeToString())
    Path(tmp.name).replace(onnx_path)
    return saved


def with_float_layers(float_onnx: Path, dst: Path, originals: dict[str, np.ndarray], keep: list[str]) -> None:
    """Copy of the exported twin in which the layers in ``keep`` get their float weights back
    (``originals`` from ``float_weights``) instead of the dequantized ones."""
    import onnx
    from onnx import numpy_helper

    weights = {p + TWIN_SUFFIX: originals[p + TWIN_SUFFIX] for p in keep}
    model = onnx.load(str(float_onnx))
    for init in model.graph.initializer:
        if init.name in weights:
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(weights[init.name]), init.name))
    onnx.save(model, str(dst))


def install_onnx(
    model_dir: Path, quantized: Path, *, inputs: list[str], output: str, **extra: Any
) -> dict[str, Any]:
    """Put a quantized ONNX file into a model directory as model.onnx, sharing the weights' bytes,
    check that ONNX Runtime loads it from there, and record it in model.json (``onnx`` entry)."""
    import onnx

    dst = model_dir / "model.onnx"
    dst.write_bytes(quantized.read_bytes())
    shared = share_weights(dst, model_dir / artifacts.WEIGHTS)
    ort_session(
        dst, 1, extra.get("disabled_optimizers")
    )  # must load from its new home, external data resolved
    proto = onnx.load(str(dst), load_external_data=False)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    info = {
        "file": dst.name,
        "input": inputs[0],
        "inputs": inputs,
        "output": output,
        "opset": opset,
        "dynamic_batch": True,
        "quantized": "int8",
        "external_data": artifacts.WEIGHTS,
        "shared_bytes": shared,
        **extra,
    }
    artifacts.add_files(model_dir, [dst.name], onnx=info)
    return info


# ONNX Runtime 1.32's fused SkipLayerNormalization CPU kernel runs ~8x slower than the plain
# LayerNormalization it replaces on this kind of machine (a 20% slower MiniLM). Whether to keep it
# is measured per model and recorded in model.json for the server to apply.
OPTIONAL_FUSIONS = ("SkipLayerNormFusion",)


def faster_session_options(onnx_path: Path, feed: dict[str, np.ndarray], *, runs: int = 15) -> list[str]:
    """The fusions worth disabling for this model: timed interleaved, kept if >= 5% faster."""
    default = ort_session(onnx_path, 1)
    without = ort_session(onnx_path, 1, list(OPTIONAL_FUSIONS))
    fns = [lambda: default.run(None, feed), lambda: without.run(None, feed)]
    with_ms, without_ms = latencies(fns, [(), ()], runs=runs)
    return list(OPTIONAL_FUSIONS) if without_ms < 0.95 * with_ms else []
