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


def _with_meta(path: Path, **changes: object) -> None:
    meta = json.loads((path / artifacts.META).read_text())
    meta.update(changes)
    (path / artifacts.META).write_text(json.dumps(meta))


def test_an_onnx_file_outside_the_directory_or_unhashed_is_refused(tmp_path: Path):
    """Every file ONNX Runtime opens must be hashed and inside the model directory (issue 22, high)."""
    from tests.models import make_model_dir

    src = make_model_dir(tmp_path / "m", onnx=True)
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((src / "model.onnx").read_bytes())
    info = artifacts.read_meta(src).onnx  # type: ignore[attr-defined]
    for name in (str(outside), "../outside.onnx"):
        _with_meta(src, onnx={**info, "file": name})
        with pytest.raises(BigModelError, match=r"ONNX model uses .*not a hashed artifact"):
            artifacts.verify(src, artifacts.read_meta(src))
    # inside the directory but not vouched for by model.json: swapping it would go unnoticed
    (src / "extra.onnx").write_bytes(outside.read_bytes())
    _with_meta(src, onnx={**info, "file": "extra.onnx"})
    with pytest.raises(BigModelError, match=r"'extra\.onnx', which is not a hashed artifact"):
        artifacts.verify(src, artifacts.read_meta(src))


def test_onnx_external_data_must_be_a_hashed_artifact(tmp_path: Path):
    import hashlib

    import onnx

    from tests.models import make_model_dir

    src = make_model_dir(tmp_path / "m", onnx=True)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 1024)
    model = onnx.load(str(src / "model.onnx"))
    init = onnx.TensorProto(name="big", data_type=onnx.TensorProto.FLOAT, dims=[256])
    init.data_location = onnx.TensorProto.EXTERNAL
    entry = init.external_data.add()
    entry.key, entry.value = "location", "../weights.bin"  # read from outside the directory
    model.graph.initializer.append(init)
    data = model.SerializeToString()
    (src / "model.onnx").write_bytes(data)
    meta = artifacts.read_meta(src)
    meta.files["model.onnx"] = artifacts.FileInfo(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (src / artifacts.META).write_text(meta.model_dump_json())
    with pytest.raises(BigModelError, match=r"uses '\.\./weights\.bin', which is not a hashed artifact"):
        artifacts.verify(src, artifacts.read_meta(src))


def test_a_symlinked_artifact_is_refused(tmp_path: Path):
    from tests.models import make_model_dir

    src = make_model_dir(tmp_path / "m")
    real = tmp_path / "real.safetensors"
    (src / artifacts.WEIGHTS).rename(real)
    (src / artifacts.WEIGHTS).symlink_to(real)  # same bytes, same hash: still refused
    with pytest.raises(BigModelError, match="is a symbolic link; artifacts are plain files"):
        artifacts.verify(src, artifacts.read_meta(src))


def test_rewriting_a_model_directory_removes_the_old_models_artifacts(tmp_path: Path):
    """A resumed run rewrites its model directory; the export of the old model went stale and
    `bigmodel export` then refused it as "not written by bigmodel export"."""
    from bigmodel.compress import export_onnx
    from tests.models import make_model_dir

    src = make_model_dir(tmp_path / "m", onnx=True)
    assert (src / "model.onnx").exists()
    loaded = artifacts.load_model(src)
    fresh = loaded.meta.model_copy(update={"files": {}})
    delattr(fresh, "onnx")
    artifacts.write_model_dir(src, loaded.module, fresh)
    assert not (src / "model.onnx").exists()
    export_onnx(src)  # exports again, no stranger in the way
    artifacts.load_model(src)
