"""Compressing a byte-level language model: bits per byte, int8 layers, distillation on next-byte
distributions, and the one-line refusals."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from bigmodel import artifacts, tasks
from bigmodel.compress.lm_measure import bits_per_byte, heldout
from bigmodel.compress.measure import side_by_side
from bigmodel.errors import BigModelError
from bigmodel.models import build_model
from bigmodel.models.layers import Int8Linear
from bigmodel.tasks import TaskSpec
from tests.lm_helpers import text_dataset, trained_lm


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_lm(tmp_path_factory, text_dataset(tmp_path_factory), steps=40)


class Uniform(torch.nn.Module):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, 256), all equal
        return torch.zeros(*idx.shape, 256)


def test_a_uniform_model_gives_exactly_8_bits_per_byte():
    rows = torch.randint(0, 256, (11, 17))
    assert bits_per_byte(Uniform(), rows) == pytest.approx(8.0, abs=1e-9)


def test_bits_per_byte_is_lower_is_better_in_the_report():
    o = {
        "params": 10,
        "file_bytes": 100,
        "tokens_per_s_b1": 50.0,
        "metric": 2.0,
        "metric_name": "bits_per_byte",
    }
    c = {**o, "file_bytes": 25, "tokens_per_s_b1": 100.0, "metric": 2.02}
    r = side_by_side(o, c)["ratios"]
    assert r["speedup_b1"] == pytest.approx(2.0) and r["file_bytes"] == pytest.approx(4.0)
    assert r["metric_relative_drop"] == pytest.approx(0.01)  # a rise in bits per byte is the worse way


def test_lm_soft_targets_are_zero_only_when_the_student_matches():
    spec = TaskSpec("lm", 256)
    t, y = torch.randn(3, 5, 256), torch.randint(0, 256, (3, 5))
    assert float(tasks.distill_loss_sum(spec, t.clone(), t, y, 2.0, 1.0)) == pytest.approx(0.0, abs=1e-4)
    assert float(tasks.distill_loss_sum(spec, -t, t, y, 2.0, 1.0)) > 1.0
    torch.testing.assert_close(tasks.distill_loss_sum(spec, -t, t, y, 2.0, 0.0), tasks.loss_sum(spec, -t, y))


def test_int8_lm_is_close_to_fp32_and_loads_back(lm: Path, tmp_path: Path):
    from bigmodel.compress import quantize
    from bigmodel.generation import tokens_per_second

    r = quantize(lm, max_drop=0.02, out=tmp_path / "q", runs=1)
    q = artifacts.load_model(tmp_path / "q")  # rebuilt from safetensors through the same module code
    layers = [m for m in q.module.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == 9 and all(m.packed for m in layers)  # 2 blocks x 4 + the head
    rows = heldout(q.meta, tmp_path / "q")
    fp32 = artifacts.load_model(lm).module
    with torch.no_grad():
        a, b = fp32(rows[:4, :-1]), q.module(rows[:4, :-1])
    assert float((a - b).abs().max()) < 0.1 * float(a.abs().max())
    assert r["ratios"]["metric_relative_drop"] <= 0.02 and r["compressed"]["metric_name"] == "bits_per_byte"
    assert r["compressed"]["metric"] == pytest.approx(q.meta.metrics["bits_per_byte"])
    assert {"tokens_per_s_b1", "tokens_per_s_b16"} <= set(r["compressed"])
    assert tokens_per_second(q.module, 2, 4, prompt_len=4) > 0  # generation runs it
    assert q.meta.lineage.parent == {"path": str(lm.resolve()), "digest": artifacts.digest(lm)}


def test_distill_improves_a_student_and_records_lineage(lm: Path, tmp_path: Path):
    from bigmodel.compress import distill

    r = distill(
        lm, size="tiny", max_steps=25, temperature=2.0, alpha=0.5, out=tmp_path / "s", runs=1, progress=False
    )
    student = artifacts.load_model(tmp_path / "s")
    torch.manual_seed(0)
    initial = build_model(student.meta.architecture)  # the student as training started (same seed)
    rows = heldout(student.meta, tmp_path / "s")
    assert r["compressed"]["metric"] < bits_per_byte(initial, rows) - 1.0
    assert student.meta.lineage.method == "distill" and student.meta.lineage.params["size"] == "tiny"
    assert student.meta.lineage.parent == {"path": str(lm.resolve()), "digest": artifacts.digest(lm)}
    assert student.meta.config is not None and student.meta.config["distill"]["temperature"] == 2.0


def test_flags_of_the_other_family_and_missing_text_are_refused(lm: Path, tmp_path: Path):
    from bigmodel.compress import distill, quantize

    with pytest.raises(
        BigModelError, match=r"--hidden shapes an mlp student; .* is a language model: use --size"
    ):
        distill(lm, hidden=[4], out=tmp_path / "s", progress=False)
    with pytest.raises(BigModelError, match="give the student's --size"):
        distill(lm, out=tmp_path / "s", progress=False)
    with pytest.raises(BigModelError, match="--method static does not apply to a language model"):
        quantize(lm, method="static", out=tmp_path / "q")
    with pytest.raises(BigModelError, match="--backend onnxruntime does not apply to a language model"):
        quantize(lm, backend="onnxruntime", out=tmp_path / "q")
    with pytest.raises(BigModelError, match=r"--smooth .* not a language model"):
        quantize(lm, smooth=0.5, out=tmp_path / "q")
    # a copy of the model whose dataset was moved away, then one whose dataset has no val rows
    data = Path((artifacts.read_meta(lm).dataset or {})["path"])
    moved = tmp_path / "data"
    shutil.copytree(data, moved)
    gone = artifacts.read_meta(lm).model_copy(update={"dataset": {"path": str(tmp_path / "nowhere")}})
    with pytest.raises(BigModelError, match=r"its dataset .*nowhere is gone"):
        heldout(gone, "lm")
    m = json.loads((moved / "manifest.json").read_text())
    m["splits"]["val"]["rows"] = 0
    (moved / "manifest.json").write_text(json.dumps(m))
    empty = artifacts.read_meta(lm).model_copy(update={"dataset": {"path": str(moved)}})
    with pytest.raises(BigModelError, match="has no held-out \\(val\\) text"):
        heldout(empty, "lm")
    assert not (tmp_path / "q").exists() and not (tmp_path / "s").exists()


def test_a_packed_int8_layer_repacks_after_its_weights_change():
    """The FBGEMM copy is a cache of the stored weights, never a second truth."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    packed, plain = Int8Linear.from_linear(lin, packed=True), Int8Linear.from_linear(lin)
    x = torch.randn(3, 16)
    torch.testing.assert_close(packed(x), lin(x), atol=0.05, rtol=0.05)
    other = Int8Linear.from_linear(torch.nn.Linear(16, 8))
    packed.load_state_dict(other.state_dict())  # written in place: the packed copy must follow
    torch.testing.assert_close(packed(x), other(x), atol=0.05, rtol=0.05)
    assert set(packed.state_dict()) == set(plain.state_dict())  # the same stored bytes either way
