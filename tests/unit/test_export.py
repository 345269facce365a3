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
