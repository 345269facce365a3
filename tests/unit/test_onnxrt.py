"""ONNX Runtime int8 sessions are accurate on every x86-64 CPU (bigmodel.onnxrt).

The emulated-CPU test runs the same check under ``qemu-x86_64 -cpu EPYC-Rome`` (an AVX2-only AMD
EPYC, no AVX-512 or VNNI): there the u8s8 kernels saturate, which is what made the suite red on
such machines. ``.ci/run`` installs qemu-user; without it that test is skipped and says why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bigmodel import onnxrt
from bigmodel.errors import BigModelError

# The shape from the issue: 64x512 by 512x256, weights N(0, 0.05), inputs N(0, 3). Saturated u8s8
# gives a max error near 1.1 there; exact integer arithmetic gives 0.17-0.19.
EXACT_MAX_ERR = 0.3


def _float_matmul(dst: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (512, 256)).astype(np.float32)
    x = rng.normal(0, 3, (64, 512)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 256])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(dst))
    return x, w


def _quantized(tmp_path: Path, method: str) -> tuple[Path, np.ndarray, np.ndarray]:
    """A MatMul quantized the way bigmodel.compress.int8 does it (int8 weights, per channel)."""
    from bigmodel.compress import int8

    x, w = _float_matmul(tmp_path / "f.onnx")
    dst = tmp_path / f"{method}.onnx"
    nodes = [n.name for n in onnx.load(str(tmp_path / "f.onnx")).graph.node]
    calibration = [{"x": x[:32]}, {"x": x[32:]}]
    int8.ort_quantize(tmp_path / "f.onnx", dst, method=method, nodes=nodes, calibration=calibration)
    return dst, x, w


@pytest.mark.parametrize("method", ["dynamic", "static"])
def test_uint8_weights_give_exact_int8_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str):
    path, x, w = _quantized(tmp_path, method)
    model = onnx.load(str(path))
    assert onnxrt.weights_to_uint8(model) == 1
    kinds = {i.name: i.data_type for i in model.graph.initializer}
    assert TensorProto.INT8 not in kinds.values(), kinds  # weight and its zero point both shifted
    monkeypatch.setenv(onnxrt.ENV, "u8")
    y = onnxrt.session(path, 1).run(None, {"x": x})[0]
    assert np.abs(y - x @ w).max() < EXACT_MAX_ERR


def test_a_weight_read_by_another_op_is_left_alone():
    w = numpy_helper.from_array(np.ones((4, 3), dtype=np.int8), "w")
    zp = numpy_helper.from_array(np.zeros(3, dtype=np.int8), "w_zp")
    nodes = [
        helper.make_node("MatMulInteger", ["x", "w", "", "w_zp"], ["y"]),
        helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),  # also reads the int8 bytes
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.INT32, [2, 3]),
            helper.make_tensor_value_info("wf", TensorProto.FLOAT, [4, 3]),
        ],
        [w, zp],
    )
    model = helper.make_model(graph)
    assert onnxrt.weights_to_uint8(model) == 0
    assert all(i.data_type == TensorProto.INT8 for i in model.graph.initializer)


def test_a_bad_override_is_one_line(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(onnxrt.ENV, "int4")
    with pytest.raises(BigModelError, match="BIGMODEL_ORT_INT8_WEIGHTS='int4': expected auto, u8 or s8"):
        onnxrt.int8_weights_saturate()


_EMULATED = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    from bigmodel import onnxrt
    path, x, w = sys.argv[1], np.load(sys.argv[2]), np.load(sys.argv[3])
    out = {"saturates": onnxrt.int8_weights_saturate()}
    for mode in ("auto", "s8"):
        os.environ[onnxrt.ENV] = mode
        y = onnxrt.session(path, 1).run(None, {"x": x})[0]
        out[mode] = float(np.abs(y - x @ w).max())
    print(json.dumps(out))
    """
)


@pytest.mark.slow  # ~45 s: ONNX Runtime under qemu (make test-slow; CI runs it)
@pytest.mark.parametrize("method", ["dynamic", "static"])
def test_accurate_on_an_emulated_avx2_only_cpu(tmp_path: Path, method: str):
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 not installed (apt-get install qemu-user; .ci/run does)")
    path, x, w = _quantized(tmp_path, method)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    args = [str(path), str(tmp_path / "x.npy"), str(tmp_path / "w.npy")]
    proc = subprocess.run(
        [qemu, "-cpu", "EPYC-Rome", sys.executable, "-c", _EMULATED, *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["saturates"] is True  # the emulated CPU has AVX2 and no VNNI
    assert got["auto"] < EXACT_MAX_ERR, got
    # What the suite saw before: signed int8 weights saturate on this CPU. If this ever stops
    # holding, the emulation no longer exercises the AVX2 path and the test above proves nothing.
    assert got["s8"] > 2 * EXACT_MAX_ERR, got
