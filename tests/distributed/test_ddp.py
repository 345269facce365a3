"""Data-parallel training on real processes (gloo): N workers must equal 1 worker."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bigmodel import TrainConfig, generate_synthetic, train


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp") / "synth"
    generate_synthetic(root, rows=1000, features=6, task="multiclass", classes=3, seed=1)
    return root


def _train(data: Path, run_dir: Path, **cfg) -> dict:
    base = {
        "data": {"dataset": str(data)},
        "run_dir": str(run_dir),
        "progress": False,
        "model": {"hidden": [16, 8]},
    }
    for key, value in cfg.items():
        section, _, leaf = key.partition("__")
        if leaf:
            base.setdefault(section, {})[leaf] = value
        else:
            base[key] = value
    return train(TrainConfig.model_validate(base))


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def test_two_workers_equal_one_after_50_sgd_steps(data: Path, tmp_path: Path):
    # ~800 training rows / global batch 16 = 50 steps; per-worker batch 8
    opts = dict(optim__name="sgd", optim__lr=0.05, optim__momentum=0.9, batch_size=16, epochs=1)
    one = _train(data, tmp_path / "one", **opts)
    two = _train(data, tmp_path / "two", dist__workers=2, **opts)
    assert one["steps"] == two["steps"] >= 50 and two["world_size"] == 2
    assert _max_diff(tmp_path / "one", tmp_path / "two") <= 1e-5
    assert two["metrics"]["accuracy"] == pytest.approx(one["metrics"]["accuracy"])


def test_unequal_shards_full_batch_gd_and_accumulation(data: Path, tmp_path: Path):
    # batch 15 over 2 workers (7 + 8 rows) and a last partial batch: must neither hang nor drift
    opts = dict(optim__name="sgd", optim__lr=0.1, batch_size=15, epochs=2, optim__grad_accum=3)
    _train(data, tmp_path / "a1", **opts)
    _train(data, tmp_path / "a2", dist__workers=2, **opts)
    assert _max_diff(tmp_path / "a1", tmp_path / "a2") <= 1e-5
    # gd: one step per epoch over all rows, computed in chunks of 100 and all-reduced
    gd = dict(optim__name="gd", optim__lr=0.5, batch_size=100, epochs=5)
    g1 = _train(data, tmp_path / "g1", **gd)
    _train(data, tmp_path / "g2", dist__workers=2, **gd)
    assert g1["steps"] == 5
    assert _max_diff(tmp_path / "g1", tmp_path / "g2") <= 1e-5


@pytest.mark.parametrize(
    "opts",
    [
        {"dist__comm_hook": "fp16"},
        # > 1 MiB of gradients: several DDP buckets by default, which deadlocked PowerSGD on gloo
        {"dist__comm_hook": "powersgd", "dist__warmup_steps": 5, "model__hidden": [1024, 512]},
        {"dist__local_sgd_period": 4, "dist__warmup_steps": 5},
    ],
)
def test_communication_options_still_learn(data: Path, tmp_path: Path, opts: dict):
    out = _train(data, tmp_path / "run", dist__workers=2, batch_size=32, epochs=8, **opts)
    assert out["metrics"]["accuracy"] > 0.6  # 3 balanced classes: chance is ~0.33
    w = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in w.values())


@pytest.mark.slow  # ~50 s: inductor compiles C++ kernels on CPU (make test-slow; CI runs it)
def test_compile_trains_the_same_weights_as_eager(data: Path, tmp_path: Path):
    # --compile wraps the (DDP) model in torch.compile: inductor's generated C++ on CPU must learn
    # what eager PyTorch learns, in this process and on 2 workers (DDP's graph split at buckets)
    from torch._dynamo.utils import counters

    opts = dict(optim__name="sgd", optim__lr=0.05, optim__momentum=0.9, batch_size=16, epochs=1, max_steps=20)
    _train(data, tmp_path / "eager", **opts)
    torch._dynamo.reset()
    counters.clear()
    one = _train(data, tmp_path / "one", model__compile=True, **opts)
    assert counters["stats"]["unique_graphs"] >= 1  # compiled, not silently eager
    two = _train(data, tmp_path / "two", model__compile=True, dist__workers=2, **opts)
    assert one["steps"] == two["steps"] == 20
    assert _max_diff(tmp_path / "eager", tmp_path / "one") <= 1e-5
    assert _max_diff(tmp_path / "eager", tmp_path / "two") <= 1e-5
