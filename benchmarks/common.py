"""Helpers shared by benchmarks: a scratch folder, cached datasets, peak memory."""

from __future__ import annotations

import os
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work"


def work_dir(*parts: str) -> Path:
    p = WORK.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


def cached_synthetic(name: str, **kwargs) -> Path:
    """Generate a synthetic dataset once into benchmarks/.work and reuse it."""
    from bigmodel import generate_synthetic

    path = WORK / "data" / name
    if not (path / "manifest.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_synthetic(path, **kwargs)
    return path


def fresh_run_dir(name: str) -> str:
    import shutil

    p = WORK / "runs" / name
    shutil.rmtree(p, ignore_errors=True)
    return str(p)


os.environ.setdefault("BIGMODEL_HOME", str(WORK / "home"))
