"""A small trained model directory, shared by the compression tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest


def trained(
    factory: pytest.TempPathFactory, name: str, *, hidden: list[int], epochs: int, dataset: str = "digits"
) -> Path:
    """Train ``hidden`` on ``dataset`` in this process into a fresh run directory."""
    from bigmodel.config import TrainConfig
    from bigmodel.training import train

    os.environ["BIGMODEL_HOME"] = str(factory.getbasetemp() / "bigmodel-home")
    run = factory.mktemp(name) / "model"
    cfg = TrainConfig.model_validate(
        {
            "data": {"dataset": dataset},
            "model": {"hidden": hidden},
            "epochs": epochs,
            "batch_size": 64,
            "optim": {"lr": 0.003},
            "run_dir": str(run),
            "progress": False,
            "checkpoint_every": 0,
        }
    )
    train(cfg)
    return run


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path``: to prove a source model was left untouched."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }
