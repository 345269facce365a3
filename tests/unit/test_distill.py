"""The distillation loss and the trainer hooks compression uses (init_from, keep_sparsity, distill)."""

from pathlib import Path

import pytest
import torch

from bigmodel import artifacts, tasks
from bigmodel.config import validate
from bigmodel.errors import BigModelError
from bigmodel.models.layers import SparseLinear
from bigmodel.tasks import TaskSpec
from bigmodel.training import train
from tests.compress_helpers import trained

MC, BIN, REG = TaskSpec("multiclass", 5), TaskSpec("binary", 1), TaskSpec("regression", 1, target_std=2.0)


def test_alpha_zero_is_the_plain_task_loss():
    torch.manual_seed(0)
    s, t = torch.randn(16, 5), torch.randn(16, 5)
    y = torch.randint(0, 5, (16,))
    torch.testing.assert_close(tasks.distill_loss_sum(MC, s, t, y, 4.0, 0.0), tasks.loss_sum(MC, s, y))


@pytest.mark.parametrize("spec", [MC, BIN])
def test_soft_part_is_zero_when_the_student_matches_the_teacher(spec: TaskSpec):
    torch.manual_seed(0)
    t = torch.randn(16, spec.num_outputs)
    y = torch.randint(0, 2, (16,)).float() if spec.task == "binary" else torch.randint(0, 5, (16,))
    assert float(tasks.distill_loss_sum(spec, t.clone(), t, y, 3.0, 1.0)) == pytest.approx(0.0, abs=1e-4)
    far = tasks.distill_loss_sum(spec, -t, t, y, 3.0, 1.0)
    assert float(far) > 0.1


def test_soft_gradients_are_scaled_by_t_squared():
    # Hinton's T^2 keeps soft-target gradients comparable across temperatures: at high T the gradient
    # of T^2 * KL tends to (s - t) / K per logit (mean-centred logits), independent of T.
    torch.manual_seed(0)
    t = torch.randn(1, 5)
    t = t - t.mean()
    s = torch.zeros(1, 5, requires_grad=True)
    tasks.distill_loss_sum(MC, s, t, torch.tensor([0]), 50.0, 1.0).backward()
    assert s.grad is not None
    torch.testing.assert_close(s.grad, (s.detach() - t) / 5, atol=1e-2, rtol=0.0)


def test_regression_distils_outputs():
    s, t, y = torch.zeros(4, 1), torch.ones(4, 1), torch.zeros(4)
    assert float(tasks.distill_loss_sum(REG, s, t, y, 1.0, 1.0)) == pytest.approx(4.0)


def test_distill_config_is_validated():
    with pytest.raises(BigModelError, match=r"distill\.alpha"):
        validate({"distill": {"teacher": "x", "alpha": 1.5}})
    with pytest.raises(BigModelError, match=r"unknown config key 'distill\.temp'"):
        validate({"distill": {"teacher": "x", "temp": 2}})


def test_init_from_keep_sparsity_and_distill_in_the_trainer(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
):
    teacher = trained(tmp_path_factory, "teacher", hidden=[32], epochs=2)
    # a pruned start: half of the first layer's weights are zero
    start = artifacts.load_model(teacher)
    lin = start.module.net[0]
    sparse = SparseLinear(lin.in_features, lin.out_features)
    with torch.no_grad():
        sparse.weight.copy_(lin.weight * (torch.rand_like(lin.weight) > 0.5))
        sparse.bias.copy_(lin.bias)
    start.module.net[0] = sparse
    arch = {**start.meta.architecture, "compact": {"net.0": {"kind": "sparse"}}}
    artifacts.write_model_dir(
        tmp_path / "start", start.module, start.meta.model_copy(update={"architecture": arch})
    )
    zeros = sparse.weight == 0

    cfg = validate(
        {
            "data": {"dataset": "digits"},
            "model": {"init_from": str(tmp_path / "start"), "keep_sparsity": True},
            "distill": {"teacher": str(teacher), "temperature": 2.0, "alpha": 0.5},
            "epochs": 1,
            "batch_size": 64,
            "run_dir": str(tmp_path / "run"),
            "progress": False,
        }
    )
    out = train(cfg)
    tuned = artifacts.load_model(tmp_path / "run")
    w = tuned.module.net[0].weight
    assert isinstance(tuned.module.net[0], SparseLinear) and torch.equal(w == 0, zeros)  # masks held
    assert not torch.equal(w, sparse.weight)  # and the rest trained
    assert out["metrics"]["accuracy"] > 0.5


def test_a_teacher_for_another_dataset_is_refused(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path):
    teacher = trained(tmp_path_factory, "bc", hidden=[4], epochs=1, dataset="breast_cancer")
    cfg = validate(
        {"data": {"dataset": "digits"}, "distill": {"teacher": str(teacher)}, "run_dir": str(tmp_path / "r")}
    )
    with pytest.raises(BigModelError, match=r"distill\.teacher .* expects features"):
        train(cfg)


def test_an_mlp_student_of_a_language_model_is_refused(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
):
    from bigmodel.compress import distill
    from bigmodel.models import build_model, transformer_architecture

    meta = artifacts.read_meta(trained(tmp_path_factory, "bc", hidden=[4], epochs=1, dataset="breast_cancer"))
    arch = transformer_architecture("tiny", context=8)
    artifacts.write_model_dir(
        tmp_path / "lm", build_model(arch), meta.model_copy(update={"architecture": arch})
    )
    with pytest.raises(BigModelError, match=r"--hidden shapes an mlp student; .*lm is a language model"):
        distill(tmp_path / "lm", hidden=[4], out=tmp_path / "student", progress=False)
    assert not (tmp_path / "student").exists()
