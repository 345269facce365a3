from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from bigmodel import artifacts
from bigmodel.compress import export_onnx
from bigmodel.errors import BigModelError
from bigmodel.models import build_model, mlp_architecture, set_standardization
from bigmodel.tasks import TaskSpec


def _model_dir(path: Path) -> torch.nn.Module:
    arch = mlp_architecture(6, 3, [16, 8])
    model = build_model(arch)
    set_standardization(model, [10.0] * 6, [3.0] * 6)
    meta = artifacts.ModelMeta(
        architecture=arch,
        task=TaskSpec("multiclass", 3).to_json(),
        features=[f"f{i}" for i in range(6)],
        preprocessing={"mean": [10.0] * 6, "std": [3.0] * 6},
    )
    artifacts.write_model_dir(path, model, meta)
    return model.eval()


def test_export_checks_and_records_onnx(tmp_path: Path):
    model = _model_dir(tmp_path / "m")
    out = export_onnx(tmp_path / "m")
    assert out["max_abs_diff"] <= 1e-4 and out["opset"] >= 17
    meta = artifacts.read_meta(tmp_path / "m")
    assert "model.onnx" in meta.files and meta.onnx["input"] == "input"  # type: ignore[attr-defined]
    artifacts.verify(tmp_path / "m", meta)
    session = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"))
    for batch in (1, 17):  # the batch dimension is dynamic
        x = torch.randn(batch, 6) * 3 + 10
        got = session.run(None, {"input": x.numpy()})[0]
        np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4)


def test_changed_onnx_is_refused(tmp_path: Path):
    _model_dir(tmp_path / "m")
    export_onnx(tmp_path / "m")
    with open(tmp_path / "m" / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BigModelError, match=r"model\.onnx: sha256 mismatch"):
        artifacts.load_model(tmp_path / "m")


def test_exporting_again_replaces_its_own_onnx_only(tmp_path: Path):
    _model_dir(tmp_path / "m")
    export_onnx(tmp_path / "m", opset=18)
    out = export_onnx(tmp_path / "m")  # a re-export, other settings: model.json follows the new file
    artifacts.load_model(tmp_path / "m")
    assert artifacts.read_meta(tmp_path / "m").onnx["opset"] == out["opset"]  # type: ignore[attr-defined]
    _model_dir(tmp_path / "u")
    (tmp_path / "u" / "model.onnx").write_text("mine")
    with pytest.raises(BigModelError, match="does not record it"):
        export_onnx(tmp_path / "u")
    assert (tmp_path / "u" / "model.onnx").read_text() == "mine"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"opset": 3}, "cannot export .* at --opset 3: .*not kept"),
        ({"opset": 999}, "--opset 999 is not an ONNX opset"),
        ({"atol": -1.0}, "--atol must be a number >= 0"),
        ({"atol": float("nan")}, "--atol must be a number >= 0"),
    ],
)
def test_bad_settings_keep_nothing(tmp_path: Path, kwargs: dict, message: str):
    _model_dir(tmp_path / "m")
    with pytest.raises(BigModelError, match=message):
        export_onnx(tmp_path / "m", **kwargs)
    assert not (tmp_path / "m" / "model.onnx").exists()
    artifacts.load_model(tmp_path / "m")


def _compressed_dir(path: Path, kind: str) -> Path:
    """The model directories ``compress quantize --method bf16`` and ``--backend torch`` write."""
    from bigmodel.compress import int8
    from bigmodel.models.layers import compact_state, linear_layers

    model = _model_dir(path)
    meta = artifacts.read_meta(path)
    meta.lineage = artifacts.Lineage(method="quantize", parent={"path": "runs/m", "digest": "ab" * 32})
    if kind == "bf16":
        model = model.to(torch.bfloat16)
        meta.architecture = {**meta.architecture, "dtype": "bfloat16"}
    else:
        layers = int8.to_int8(model, list(linear_layers(model)))
        meta.architecture = {**meta.architecture, "compact": layers}
    artifacts.write_model_dir(path, model, meta, state=compact_state(model))
    return path


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("bf16", "its weights are bfloat16, which ONNX Runtime on CPU does not run"),
        ("int8", "its int8 layers (net.0, net.2, net.4) run on PyTorch's int8 kernels"),
    ],
)
def test_a_model_onnx_runtime_cannot_run_is_refused_in_one_clean_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, says: str
):
    from bigmodel.cli import main

    m = _compressed_dir(tmp_path / "m", kind)
    before = (m / "model.json").read_bytes()
    assert main(["export", str(m)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot export") and says in err[0], captured.err
    assert "\x1b" not in captured.err and "Traceback" not in captured.err
    assert "(runs/m)" in err[0]  # the float32 model to export (or quantize) instead
    assert not (m / "model.onnx").exists() and (m / "model.json").read_bytes() == before
    artifacts.load_model(m)


def test_onnx_runtime_refusing_the_exported_graph_is_one_line(tmp_path: Path):
    """Whatever ONNX Runtime cannot load (here bfloat16 arithmetic) is a BigModelError, not its traceback."""
    from bigmodel.compress.export import _export, max_abs_diff

    model = _model_dir(tmp_path / "m").to(torch.bfloat16)
    x = torch.randn(2, 6) * 3 + 10
    _export(model, x, tmp_path / "bf16.onnx", None)
    with pytest.raises(
        BigModelError, match=r"^ONNX Runtime cannot run the exported model: \[ONNXRuntimeError\]"
    ):
        max_abs_diff(model, tmp_path / "bf16.onnx", [x])


def test_exporter_errors_become_one_plain_line():
    from bigmodel.compress.export import exporter_error

    err = RuntimeError(  # the shape of torch.onnx's (dynamo) failure message
        "Failed to convert the exported program to an ONNX model. \x1b[96mThis is step 3/3\x1b[0m of "
        "exporting the model to ONNX. Next steps:\n- If there is a missing ONNX function, implement it\n\n"
        "## Exception summary\n\n<class 'torch.onnx._internal.exporter._errors.DispatchError'>: No ONNX "
        "function found for <OpOverload(op='aten._int_mm', overload='default')>.\n⬆️\n"
        "<class 'torch.onnx._internal.exporter._errors.ConversionError'>: Error when translating node\n"
    )
    assert exporter_error(err) == (
        "DispatchError: No ONNX function found for <OpOverload(op='aten._int_mm', overload='default')>."
    )
    assert exporter_error(RuntimeError("\x1b[1mplain\x1b[0m failure\nmore")) == "plain failure"
    assert exporter_error(RuntimeError("")) == "RuntimeError"


def test_the_export_carries_no_exporter_provenance(tmp_path: Path):
    """Stack traces with local paths are more bytes than a small model's weights; none are kept."""
    import onnx

    _model_dir(tmp_path / "m")
    out = export_onnx(tmp_path / "m")
    graph = onnx.load(str(tmp_path / "m" / "model.onnx")).graph
    assert not any(n.metadata_props or n.doc_string for n in graph.node) and not graph.value_info
    assert out["bytes"] < 2 * (tmp_path / "m" / "model.safetensors").stat().st_size
