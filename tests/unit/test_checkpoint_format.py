"""Checkpoints hold no pickle, restore exactly in one process, and refuse a changed file."""

import json
from pathlib import Path

import torch
from safetensors import safe_open

from bigmodel.config import OptimConfig
from bigmodel.models import build_model, transformer_architecture
from bigmodel.train import checkpoint
from bigmodel.train.evaluation import SINGLE
from bigmodel.train.optim import build_optimizer, build_scheduler


def _setup(seed: int):
    torch.manual_seed(seed)
    model = build_model(transformer_architecture("tiny", context=8))
    opt = build_optimizer(model.parameters(), OptimConfig(name="adamw", lr=1e-2))
    return model, opt, build_scheduler(opt, OptimConfig(schedule="cosine"), total_steps=10)


def test_save_restore_roundtrip_without_pickle(tmp_path: Path):
    model, opt, sched = _setup(0)
    for _ in range(3):
        model(torch.randint(0, 256, (2, 8))).square().mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    trainer = {"epoch": 1, "batch": 7, "step": 3}
    path = checkpoint.save(
        tmp_path, step=3, module=model, optimizer=opt, scheduler=sched, trainer=trainer, env=SINGLE
    )
    assert path is not None
    files = sorted(p for p in path.rglob("*") if p.is_file())
    assert {p.suffix for p in files} == {".safetensors", ".json"}  # DCP's pickled .metadata is never written
    for f in files:
        if f.suffix == ".safetensors":
            with safe_open(str(f), "pt") as g:  # plain safetensors: a JSON header and raw bytes
                assert list(g.keys())
    found = checkpoint.latest(tmp_path)
    assert found is not None and found[0] == path
    m2, o2, s2 = _setup(1)  # different weights, fresh optimizer state
    st = checkpoint.restore(*found, module=m2, optimizer=o2, scheduler=s2, env=SINGLE)
    assert st == trainer
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values(), strict=True)
    )
    sa, sb = opt.state_dict(), o2.state_dict()
    for k, v in sa["state"].items():
        assert all(torch.equal(v[n], sb["state"][k][n]) for n in v)
    assert s2.get_last_lr() == sched.get_last_lr()


def test_a_changed_shard_is_not_trusted(tmp_path: Path):
    model, opt, sched = _setup(0)
    path = checkpoint.save(
        tmp_path, step=1, module=model, optimizer=opt, scheduler=sched, trainer={"epoch": 0}, env=SINGLE
    )
    assert path is not None and checkpoint.latest(tmp_path) is not None
    state = json.loads((path / "state.json").read_text())
    shard = next(f for f in state["files"] if f.startswith("shards/"))
    data = bytearray((path / shard).read_bytes())
    data[-1] ^= 1
    (path / shard).write_bytes(bytes(data))
    assert checkpoint.latest(tmp_path) is None
