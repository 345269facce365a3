import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, r2_score

from bigmodel import tasks
from bigmodel.tasks import TaskSpec


def test_binary_accuracy_and_loss():
    spec = TaskSpec("binary", 1)
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    m = tasks.metrics(spec, logits, y)
    assert m["accuracy"] == 0.5
    assert m["loss"] == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y).item()
    )
    p = tasks.postprocess(spec, logits)
    assert torch.allclose(p["probabilities"].sum(1), torch.ones(4))
    assert p["label_codes"].tolist() == [1, 0, 1, 0]


def test_regression_metrics_on_original_scale():
    spec = TaskSpec("regression", 1, target_mean=10.0, target_std=2.0)
    rng = np.random.default_rng(0)
    y = rng.normal(10, 2, 200)
    pred = y + rng.normal(0, 0.5, 200)
    logits = torch.tensor((pred - 10.0) / 2.0, dtype=torch.float32)[:, None]
    m = tasks.metrics(spec, logits, torch.tensor(y, dtype=torch.float32))
    assert m["r2"] == pytest.approx(r2_score(y, pred), abs=1e-4)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred), abs=1e-4)
    assert torch.allclose(
        tasks.postprocess(spec, logits)["predictions"].double(), torch.tensor(pred), atol=1e-4
    )


def test_sums_add_up_across_parts():
    spec = TaskSpec("multiclass", 3)
    logits, y = torch.randn(50, 3), torch.randint(0, 3, (50,))
    s = tasks.new_sums(spec)
    tasks.update_sums(spec, s, logits[:20], y[:20])
    tasks.update_sums(spec, s, logits[20:], y[20:])
    assert tasks.finalize(spec, s) == pytest.approx(tasks.metrics(spec, logits, y))
