"""A seeded synthetic dataset of any size, generated and written chunk by chunk in bounded memory.

Labels come from a fixed random two-layer "teacher" network, so the task is learnable but not
linear; features get random scales and offsets so that standardisation matters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bigmodel.data.manifest import Manifest, Task
from bigmodel.data.shards import ShardWriter, check_seed
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_dir

CHUNK_ROWS = 65536  # fixed, so the data depends on the seed and row count only
_TEACHER_HIDDEN = 32


def generate_synthetic(
    dst: str | Path,
    *,
    rows: int,
    features: int,
    task: Task = "binary",
    classes: int = 2,
    seed: int = 0,
    val_fraction: float = 0.2,
    noise: float = 0.1,
    progress: bool = False,
) -> Manifest:
    """Write a prepared dataset of ``rows`` x ``features`` to ``dst`` (which must not exist)."""
    check_seed(seed)
    if rows < 2:
        raise BigModelError(f"--rows must be at least 2, got {rows}")
    if features < 1:
        raise BigModelError(f"--features must be at least 1, got {features}")
    if task == "multiclass" and classes < 3:
        raise BigModelError(f"--task multiclass needs --classes >= 3, got {classes}")
    if task == "binary":
        classes = 2
    dst = Path(dst)
    if dst.exists():
        raise BigModelError(
            f"destination already exists: {dst} (choose a new folder; nothing was overwritten)"
        )
    outputs = classes if task == "multiclass" else 1
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((features, _TEACHER_HIDDEN)) / np.sqrt(features)
    w2 = rng.standard_normal((_TEACHER_HIDDEN, outputs)) * 2.0 / np.sqrt(_TEACHER_HIDDEN)
    w_lin = rng.standard_normal((features, outputs)) / np.sqrt(features)
    scale = np.exp(rng.uniform(-2.0, 2.0, features))
    offset = rng.uniform(-5.0, 5.0, features)

    names = [f"f{j}" for j in range(features)]
    labels = list(range(classes)) if task != "regression" else None
    from bigmodel.console import progress_bar  # local: keeps data free of console at import

    with (
        atomic_dir(dst) as tmp,
        progress_bar("generating", total=rows, enabled=progress) as advance,
        ShardWriter(
            tmp,
            name=dst.name,
            source=f"synthetic:{task}:rows={rows}:features={features}:seed={seed}",
            task=task,
            features=names,
            label="label",
            label_values=labels,
            seed=seed,
            val_fraction=val_fraction,
            random_order=True,  # rows are drawn independently
        ) as writer,
    ):
        for chunk, start in enumerate(range(0, rows, CHUNK_ROWS)):
            n = min(CHUNK_ROWS, rows - start)
            r = np.random.default_rng([seed, 1, chunk])
            z = r.standard_normal((n, features))  # (n, F) latent, standardised
            logits = np.tanh(z @ w1) @ w2 + z @ w_lin  # (n, outputs)
            if task == "regression":
                y = logits[:, 0] + noise * r.standard_normal(n)
            elif task == "binary":
                y = (logits[:, 0] + noise * r.standard_normal(n) > 0).astype(np.int64)
            else:
                y = np.argmax(logits + noise * r.gumbel(size=logits.shape), axis=1)
            x = (z * scale + offset).astype(np.float32)
            writer.write(x, y)
            advance(n)
        manifest = writer.close()
    return manifest
