import json
from pathlib import Path

import pytest
import torch

from bigmodel import artifacts
from bigmodel.errors import BigModelError
from bigmodel.models import build_model, mlp_architecture
from bigmodel.tasks import TaskSpec


def _save(path: Path) -> torch.nn.Module:
    arch = mlp_architecture(4, 3, [8])
    model = build_model(arch)
    meta = artifacts.ModelMeta(
        architecture=arch,
        task=TaskSpec("multiclass", 3, ["a", "b", "c"]).to_json(),
        features=["f0", "f1", "f2", "f3"],
    )
    artifacts.write_model_dir(path, model, meta)
    return model


def test_roundtrip_and_digest(tmp_path: Path):
    model = _save(tmp_path / "m")
    loaded = artifacts.load_model(tmp_path / "m")
    x = torch.randn(5, 4)
    assert torch.equal(loaded.module(x), model.eval()(x))
    assert loaded.spec.label_values == ["a", "b", "c"]
    assert len(artifacts.digest(tmp_path / "m")) == 64
    assert artifacts.dir_bytes(tmp_path / "m") > 0


def test_changed_weights_are_refused(tmp_path: Path):
    _save(tmp_path / "m")
    with open(tmp_path / "m" / artifacts.WEIGHTS, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(BigModelError, match="sha256 mismatch"):
        artifacts.load_model(tmp_path / "m")


def test_not_a_model_dir(tmp_path: Path):
    with pytest.raises(BigModelError, match="model directory not found"):
        artifacts.load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BigModelError, match="not a model directory"):
        artifacts.load_model(tmp_path / "empty")


def test_weights_that_do_not_fit_the_architecture(tmp_path: Path):
    _save(tmp_path / "m")
    meta = artifacts.read_meta(tmp_path / "m")
    meta.architecture["hidden"] = [9]
    artifacts.write_model_dir(tmp_path / "m2", build_model(mlp_architecture(4, 3, [8])), meta)
    with pytest.raises(BigModelError, match="does not fit the architecture"):
        artifacts.load_model(tmp_path / "m2")


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/passwd", "sub/../../x", "..", ""])
def test_an_artifact_name_that_leaves_the_folder_is_refused(tmp_path: Path, name: str):
    # model.json names the files that are hashed, registered and checked out: a crafted name would
    # read (register) or write (checkout) outside the model directory.
    _save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / artifacts.META).read_text())
    meta["files"][name] = {"sha256": "0" * 64, "bytes": 1}
    (tmp_path / "m" / artifacts.META).write_text(json.dumps(meta))
    with pytest.raises(BigModelError, match="is not a plain file name"):
        artifacts.read_meta(tmp_path / "m")
