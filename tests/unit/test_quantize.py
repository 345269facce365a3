"""int8 layers, ONNX Runtime and torch quantization of a trained model, the accuracy-aware search."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from bigmodel import artifacts
from bigmodel.compress import quantize
from bigmodel.compress.measure import open_runner, split_arrays
from bigmodel.compress.quantize import search
from bigmodel.errors import BigModelError
from bigmodel.models.layers import Int8Linear
from tests.compress_helpers import trained, tree_digest


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained(tmp_path_factory, "q", hidden=[128, 128], epochs=6)


def test_int8_linear_matches_float_closely():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    x = torch.randn(33, 64)
    for q in (
        Int8Linear.from_linear(lin),
        Int8Linear.from_linear(lin, input_scale=float(x.abs().max()) / 127),
    ):
        err = (q(x) - lin(x)).abs().max() / lin(x).abs().max()
        assert err < 0.02, err
        assert q.qweight.dtype == torch.int8 and q.qweight.shape == (64, 48)
    smooth = torch.rand(64) + 0.5  # SmoothQuant rescaling leaves the product unchanged
    assert (Int8Linear.from_linear(lin, smooth=smooth)(x) - lin(x)).abs().max() < 0.05


@pytest.mark.parametrize(
    ("method", "backend"), [("dynamic", "onnxruntime"), ("static", "onnxruntime"), ("dynamic", "torch")]
)
def test_int8_keeps_accuracy_and_loads_as_a_model_dir(model: Path, tmp_path: Path, method: str, backend: str):
    before = tree_digest(model)
    out = quantize(model, method=method, backend=backend, out=tmp_path / "q", runs=5)
    o, c = out["original"], out["compressed"]
    assert c["metric"] >= o["metric"] - 0.01  # the default --max-drop: 1% relative
    assert c["file_bytes"] * 2.5 < o["file_bytes"] and c["runtime"] == backend
    loaded = artifacts.load_model(tmp_path / "q")  # the PyTorch path: int8 layers rebuilt from safetensors
    assert sum(isinstance(m, Int8Linear) for m in loaded.module.modules()) == 3
    meta = loaded.meta
    assert meta.lineage.method == "quantize" and meta.lineage.parent["digest"] == artifacts.digest(model)
    if backend == "onnxruntime":
        onnx_info = meta.onnx  # type: ignore[attr-defined]
        assert (
            onnx_info["shared_bytes"] >= 64 * 128 + 128 * 128 + 128 * 10
        )  # int8 weights stored once, in safetensors
        assert (tmp_path / "q" / "model.onnx").stat().st_size < 10_000
        ops = {
            n.op_type
            for n in onnx.load(str(tmp_path / "q" / "model.onnx"), load_external_data=False).graph.node
        }
        assert ("MatMulInteger" in ops) if method == "dynamic" else ("DequantizeLinear" in ops)
        # both runtimes agree on the validation split
        x, _ = split_arrays(meta)
        got = open_runner(tmp_path / "q")(x[:256])
        with torch.no_grad():
            ref = loaded.module(torch.from_numpy(x[:256])).numpy()
        assert np.mean(got.argmax(1) == ref.argmax(1)) > 0.97
    assert tree_digest(model) == before


@pytest.mark.parametrize("method", ["fp16", "bf16"])
def test_half_precision(model: Path, tmp_path: Path, method: str):
    out = quantize(model, method=method, out=tmp_path / "h", runs=5)
    assert out["compressed"]["metric"] >= out["original"]["metric"] - 0.01
    assert out["ratios"]["file_bytes"] > 1.5
    assert artifacts.read_meta(tmp_path / "h").architecture["dtype"] in ("float16", "bfloat16")


def test_search_keeps_the_most_sensitive_layers_in_float():
    cost = {"a": 0.01, "b": 0.05, "c": 0.002}  # metric lost by quantizing each layer

    def measure(keep: list[str]) -> tuple[float]:
        return (1.0 - sum(v for k, v in cost.items() if k not in keep),)

    kept, sens = search(list(cost), measure, base=1.0, max_drop=0.02)
    assert kept == ["b"] and sens["b"] == pytest.approx(0.05)
    assert search(list(cost), measure, base=1.0, max_drop=0.1) == ([], {})
    with pytest.raises(BigModelError, match="max-drop"):
        search(list(cost), measure, base=1.0, max_drop=0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "int4"}, "unknown --method 'int4'"),
        ({"backend": "tpu"}, "unknown --backend 'tpu'"),
        ({"method": "fp16", "backend": "onnxruntime"}, "runs on PyTorch"),
        ({"max_drop": 1.5}, "--max-drop"),
    ],
)
def test_bad_choices_are_one_line_errors(model: Path, tmp_path: Path, kwargs: dict, message: str):
    with pytest.raises(BigModelError, match=message):
        quantize(model, out=tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_layers_kept_in_float_by_the_onnx_search(tmp_path: Path):
    """The ONNX Runtime candidates: a kept layer is a float MatMul with its original weights."""
    from bigmodel.compress import int8
    from bigmodel.compress.measure import ort_session
    from bigmodel.models import build_model, mlp_architecture

    torch.manual_seed(0)
    model = build_model(mlp_architecture(16, 4, [32, 32])).eval()
    paths = ["net.0", "net.2", "net.4"]
    q = build_model(mlp_architecture(16, 4, [32, 32]))
    q.load_state_dict(model.state_dict())
    int8.to_int8(q, paths)
    twin = tmp_path / "twin.onnx"
    int8.export_twin(
        int8.float_twin(q, paths),
        (torch.randn(2, 16),),
        twin,
        input_names=["input"],
        output_name="logits",
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    nodes = int8.matmul_nodes(twin)
    assert set(nodes) == set(paths)
    originals = int8.float_weights(model, paths)
    int8.with_float_layers(twin, tmp_path / "c.onnx", originals, ["net.2"])
    int8.ort_quantize(
        tmp_path / "c.onnx", tmp_path / "q.onnx", method="dynamic", nodes=[nodes["net.0"], nodes["net.4"]]
    )
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) == 2
    kept = next(i for i in graph.initializer if i.name == "net.2" + int8.TWIN_SUFFIX)
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(kept), model.net[2].weight.detach().numpy().T)
    x = torch.randn(5, 16)
    got = ort_session(tmp_path / "q.onnx", 1).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=0.05)
