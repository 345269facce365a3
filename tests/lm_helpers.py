"""A tiny byte-level language model trained on a small generated text: shared by the LM compression tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def text_dataset(factory: pytest.TempPathFactory, *, n_bytes: int = 60_000, context: int = 64) -> Path:
    """A seeded generated-text ``lm`` dataset (context ``context``) in a fresh folder."""
    from bigmodel.data.text import generate_text

    dst = factory.mktemp("text") / "data"
    generate_text(dst, n_bytes=n_bytes, context=context, seed=0, val_fraction=0.1)
    return dst


def trained_lm(
    factory: pytest.TempPathFactory, dataset: Path, *, size: str = "tiny", steps: int = 60
) -> Path:
    """A transformer LM of ``size`` trained ``steps`` Adam steps on ``dataset`` in this process."""
    from bigmodel.config import TrainConfig
    from bigmodel.training import train

    os.environ["BIGMODEL_HOME"] = str(factory.getbasetemp() / "bigmodel-home")
    run = factory.mktemp("lm") / "model"
    cfg = TrainConfig.model_validate(
        {
            "data": {"dataset": str(dataset)},
            "model": {"name": "transformer", "size": size},
            "epochs": 1,
            "max_steps": steps,
            "batch_size": 16,
            "optim": {"lr": 0.01},
            "run_dir": str(run),
            "progress": False,
            "checkpoint_every": 0,
            "eval_rows": 64,
            # one thread: on a busy 2-core machine two OpenMP threads made these tiny steps 50x slower
            "dist": {"threads": 1},
        }
    )
    train(cfg)
    return run
