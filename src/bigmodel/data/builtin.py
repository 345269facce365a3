"""Built-in datasets by name, prepared once into a cache under ``$BIGMODEL_HOME/datasets``.

``breast_cancer`` and ``digits`` are real data shipped inside scikit-learn (no download);
``synthetic`` is a 20,000-row binary task from the seeded generator. Two byte-level text datasets
for language models (``--model transformer``): ``text``, 2 MB of seeded generated text, and
``pysource``, the Python standard library's own source (~13 MB, shipped with every Python).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bigmodel.data import remote
from bigmodel.data.manifest import Manifest, Task, load_manifest
from bigmodel.data.shards import ShardWriter
from bigmodel.data.synthetic import generate_synthetic
from bigmodel.data.text import generate_text, prepare_python_source
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_dir

BUILTINS = ("breast_cancer", "digits", "synthetic", "text", "pysource")


def home() -> Path:
    """Where bigmodel keeps its caches and default registry: ``$BIGMODEL_HOME`` or ``~/.bigmodel``."""
    return Path(os.environ.get("BIGMODEL_HOME", Path.home() / ".bigmodel"))


def _write_sklearn(name: str, dst: Path, seed: int, val_fraction: float) -> None:
    from sklearn import datasets as skd

    loader = {"breast_cancer": skd.load_breast_cancer, "digits": skd.load_digits}[name]
    bunch = loader()
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
    features = [str(f).replace(" ", "_") for f in getattr(bunch, "feature_names", [])]
    labels = [str(t) if name == "breast_cancer" else int(t) for t in bunch.target_names]
    task: Task = "binary" if len(labels) == 2 else "multiclass"
    with (
        atomic_dir(dst, exist_ok=True) as tmp,
        ShardWriter(
            tmp,
            name=name,
            source=f"sklearn:{name}",
            task=task,
            features=features,
            label="target",
            label_values=labels,
            seed=seed,
            val_fraction=val_fraction,
            random_order=True,  # permuted below
        ) as writer,
    ):
        # Rows are shuffled before the split so that the sorted-by-class source order cannot leak.
        perm = np.random.default_rng(seed).permutation(len(x))
        writer.write(x[perm], y[perm])
        writer.close()


def resolve(dataset: str, *, seed: int = 0, val_fraction: float = 0.2) -> tuple[Path, Manifest]:
    """A built-in name or a prepared dataset folder -> (folder, manifest); built-ins are prepared once."""
    if remote.is_url(dataset):  # e.g. s3://bucket/prepared/ds: copied once, checked, read locally
        path = remote.fetch(dataset, home() / "datasets" / "remote")
        return path, load_manifest(path)
    if dataset not in BUILTINS:
        path = Path(dataset)
        if not path.exists():
            raise BigModelError(
                f"unknown dataset '{dataset}': not a folder and not a built-in ({', '.join(BUILTINS)})"
            )
        return path, load_manifest(path)
    dst = home() / "datasets" / f"{dataset}-seed{seed}-val{val_fraction:g}"
    if not (dst / "manifest.json").exists():
        if dataset in ("synthetic", "text", "pysource"):
            tmp_parent = dst.parent / f".{dst.name}.gen-{os.getpid()}"
            if dataset == "synthetic":
                generate_synthetic(tmp_parent, rows=20000, features=16, seed=seed, val_fraction=val_fraction)
            elif dataset == "text":
                generate_text(
                    tmp_parent, n_bytes=2_000_000, context=128, seed=seed, val_fraction=val_fraction
                )
            else:
                prepare_python_source(tmp_parent, context=256, seed=seed, val_fraction=val_fraction)
            try:
                os.rename(tmp_parent, dst)
            except OSError:  # another process prepared it first
                import shutil

                shutil.rmtree(tmp_parent, ignore_errors=True)
        else:
            _write_sklearn(dataset, dst, seed, val_fraction)
    return dst, load_manifest(dst)
