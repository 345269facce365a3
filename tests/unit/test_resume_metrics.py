"""A run stopped by max_steps in mid-epoch and resumed reports the same per-epoch training loss as
a run that never stopped (its final checkpoint once kept an earlier epoch's banked loss)."""

import json
from pathlib import Path

import pytest

from bigmodel import TrainConfig, train


def _cfg(run: Path, **extra: object) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "data": {"dataset": "digits"},
            "model": {"hidden": [16]},
            "optim": {"name": "sgd", "lr": 0.05},
            "batch_size": 64,
            "epochs": 3,
            "run_dir": str(run),
            "progress": False,
            **extra,
        }
    )


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_run_capped_mid_epoch_then_resumed_logs_what_an_uninterrupted_run_logs(tmp_path: Path):
    train(_cfg(tmp_path / "whole"))
    train(_cfg(tmp_path / "cut", max_steps=30))  # 23 steps an epoch: stops inside epoch 2
    train(_cfg(tmp_path / "cut", max_steps=0, resume=True))
    assert _losses(tmp_path / "cut") == pytest.approx(_losses(tmp_path / "whole"), rel=1e-6)


def test_checkpoints_after_a_resume_record_the_reader_order_now_in_use(tmp_path: Path):
    run = tmp_path / "r"
    train(_cfg(run, epochs=1))
    ckpt = sorted((run / "checkpoints").glob("step-*"))[-1]
    state = json.loads((ckpt / "state.json").read_text())
    current = state["trainer"]["order"]
    state["trainer"]["order"] = "v1"  # written before the order was recorded
    (ckpt / "state.json").write_text(json.dumps(state))
    train(_cfg(run, epochs=2, resume=True))  # at an epoch boundary: allowed
    newest = sorted((run / "checkpoints").glob("step-*"))[-1]
    assert newest != ckpt
    assert json.loads((newest / "state.json").read_text())["trainer"]["order"] == current != "v1"
