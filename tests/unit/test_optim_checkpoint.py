import math

import pytest
import torch

from bigmodel.config import OptimConfig
from bigmodel.training.checkpoint import flatten, unflatten
from bigmodel.training.optim import build_optimizer, lr_factor


def test_schedules():
    assert lr_factor(OptimConfig(), 123, 1000) == 1.0
    warm = OptimConfig(warmup_steps=10)
    assert lr_factor(warm, 0, 100) == pytest.approx(0.1) and lr_factor(warm, 9, 100) == 1.0
    step = OptimConfig(schedule="step", step_size=10, gamma=0.5)
    assert lr_factor(step, 25, 100) == 0.25
    cos = OptimConfig(schedule="cosine")
    assert lr_factor(cos, 0, 100) == 1.0 and lr_factor(cos, 50, 100) == pytest.approx(0.5)
    assert lr_factor(cos, 100, 100) == pytest.approx(0.0, abs=1e-12) and not math.isnan(
        lr_factor(cos, 200, 100)
    )


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizer_state_roundtrips_without_pickle(name: str):
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model.parameters(), OptimConfig(name=name, momentum=0.9 if name == "sgd" else 0.0))
    for _ in range(3):
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(opt.state_dict(), tensors)
    import json

    restored = unflatten(json.loads(json.dumps(skeleton)), tensors)
    opt2 = build_optimizer(model.parameters(), OptimConfig(name=name))
    opt2.load_state_dict(restored)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s1["state"]:
        for key, v in s1["state"][k].items():
            assert torch.equal(v, s2["state"][k][key]) if torch.is_tensor(v) else v == s2["state"][k][key]
