"""ONNX Runtime sessions that give the same int8 answers on every x86-64 CPU.

Our int8 ONNX graphs store weights as signed int8 (u8s8: uint8 activations times int8 weights),
the bytes that model.safetensors also holds. On CPUs without VNNI (AVX2-only, and AVX-512 without
VNNI) ONNX Runtime multiplies u8s8 with VPMADDUBSW, whose pairwise int16 sums saturate:
255 * 127 * 2 > 32767. Measured on an AVX2-only AMD EPYC: one 64x512 by 512x256 MatMul had a max
error of 1.09 instead of 0.17. ONNX Runtime's quantization guide gives two ways out, 7-bit weights
(``reduce_range``, less precise everywhere) or uint8 weights (U8U8, no saturation). A model
quantized on one CPU may be served on another, so the choice is made here, when a session opens on
the CPU that runs it: where u8s8 could saturate, each int8 weight initializer is shifted to uint8
with its zero point moved by 128, an exact rewrite (w - zp is unchanged), before the session is
built. ``BIGMODEL_ORT_INT8_WEIGHTS=u8|s8|auto`` overrides the detection (tests use it).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from bigmodel.errors import BigModelError

ENV = "BIGMODEL_ORT_INT8_WEIGHTS"
# The ops whose constant int8 weight (input index) and zero point (index) we may shift.
_WEIGHT_INPUTS = {"MatMulInteger": (1, 3), "DequantizeLinear": (0, 2)}


def int8_weights_saturate() -> bool:
    """True where ONNX Runtime's u8s8 kernels can saturate: x86-64 without a VNNI instruction."""
    choice = os.environ.get(ENV, "auto")
    if choice not in ("auto", "u8", "s8"):
        raise BigModelError(f"{ENV}={choice!r}: expected auto, u8 or s8")
    if choice != "auto":
        return choice == "u8"
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False  # ARM's int8 dot products accumulate in 32 bits
    try:
        import torch

        caps = torch.cpu.get_capabilities()  # CPUID, read by the cpuinfo library
    except (ImportError, AttributeError, RuntimeError):
        return True  # cannot tell: the uint8 path is exact everywhere
    return not any(caps.get(k, False) for k in ("avx512_vnni", "avx_vnni", "amx_int8"))


def weights_to_uint8(model: Any) -> int:
    """Rewrite ``model`` (an onnx ModelProto, external data loaded) in place so that every constant
    int8 weight of MatMulInteger / DequantizeLinear is uint8 with its zero point + 128; return how
    many weights changed. A weight or zero point also read by anything else is left alone."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        for idx, name in enumerate(node.input):
            users.setdefault(name, []).append((node, idx))

    def only_weight_uses(name: str) -> bool:
        return all(
            n.op_type in _WEIGHT_INPUTS and i in _WEIGHT_INPUTS[n.op_type] for n, i in users.get(name, [])
        )

    def is_int8(name: str) -> bool:
        return name in inits and inits[name].data_type == TensorProto.INT8

    def zero_point_of(reader: Any) -> str:
        k = _WEIGHT_INPUTS[reader.op_type][1]
        return str(reader.input[k]) if len(reader.input) > k else ""

    shifted: set[str] = set()
    for node in graph.node:
        slots = _WEIGHT_INPUTS.get(node.op_type)
        if slots is None or len(node.input) <= slots[0] or node.input[slots[0]] in shifted:
            continue
        w = node.input[slots[0]]
        if not (is_int8(w) and only_weight_uses(w)):
            continue
        zps = {zero_point_of(r) for r, _ in users[w]}
        if len(zps) != 1:
            continue
        zp = zps.pop()
        # ONNX Runtime's quantizer gives each weight a zero point of its own; anything else (none,
        # or one shared with another tensor) is left as it is rather than shifted for both.
        if not (is_int8(zp) and all(r.input[_WEIGHT_INPUTS[r.op_type][0]] == w for r, _ in users[zp])):
            continue
        arr = numpy_helper.to_array(inits[w]).astype(np.int16) + 128
        inits[w].CopyFrom(numpy_helper.from_array(arr.astype(np.uint8), w))
        z = numpy_helper.to_array(inits[zp]).astype(np.int16) + 128
        inits[zp].CopyFrom(numpy_helper.from_array(z.astype(np.uint8), zp))
        shifted.add(w)
    return len(shifted)


def session(path: str | Path, threads: int, disabled_optimizers: list[str] | None = None) -> Any:
    """An ONNX Runtime CPU session for ``path``, int8 weights made safe for this CPU (see above)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    source: str | bytes = str(path)
    if int8_weights_saturate():
        import onnx

        model = onnx.load(str(path))  # external data resolved beside the file
        if weights_to_uint8(model):
            source = model.SerializeToString()
    return ort.InferenceSession(
        source, opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled_optimizers or []
    )
