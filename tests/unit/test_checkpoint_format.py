"""Checkpoints hold no pickle, restore exactly in one process, and refuse a changed file."""

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open

from bigmodel.config import OptimConfig
from bigmodel.models import build_model, transformer_architecture
from bigmodel.training import checkpoint
from bigmodel.training.evaluation import SINGLE
from bigmodel.training.optim import build_optimizer, build_scheduler


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
    trainer = checkpoint.TrainerState(epoch=1, batch=7, step=3, data_hash="abc", epoch_loss=2.5, epoch_rows=9)
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
    assert json.loads((path / "state.json").read_text())["trainer"] == trainer.to_json()
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
        tmp_path,
        step=1,
        module=model,
        optimizer=opt,
        scheduler=sched,
        trainer=checkpoint.TrainerState(),
        env=SINGLE,
    )
    assert path is not None and checkpoint.latest(tmp_path) is not None
    state = json.loads((path / "state.json").read_text())
    shard = next(f for f in state["files"] if f.startswith("shards/"))
    data = bytearray((path / shard).read_bytes())
    data[-1] ^= 1
    (path / shard).write_bytes(bytes(data))
    assert checkpoint.latest(tmp_path) is None


def test_trainer_state_reads_what_older_checkpoints_saved():
    # state.json's "trainer" object as the loop wrote it before it was typed (a mid-epoch checkpoint
    # that banked its epoch's loss), and as a version before the shuffle order was recorded wrote it
    saved = json.loads(
        '{"epoch": 1, "batch": 36, "step": 300, "best_val": Infinity, "bad_epochs": 0,'
        ' "train_seconds": 4.5, "train_rows": 19200, "wait_seconds": 0.25, "data_hash": "ab12",'
        ' "order": "v2-b64", "epoch_loss": 31.5, "epoch_rows": 3200}'
    )
    st = checkpoint.TrainerState.from_json(saved)
    assert (st.epoch, st.batch, st.step, st.best_val, st.epoch_loss, st.epoch_rows) == (
        1,
        36,
        300,
        math.inf,
        31.5,
        3200,
    )
    assert st.to_json() == saved and list(st.to_json()) == list(saved)  # written back the same
    old = checkpoint.TrainerState.from_json({"epoch": 2, "batch": 0, "step": 500})
    assert old.order == "v1" and old.data_hash == "" and "epoch_loss" not in old.to_json()
