"""Helpers shared by benchmarks: a scratch folder, cached datasets, peak memory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


def start_peer(script: Path, args: list[str], port: int, env: dict[str, str], what: str) -> Any:
    """Start a peer server (``python script *args``) and wait until its FastAPI /docs answers on
    ``port``; a peer that exits or never answers is an error naming ``what``."""
    import subprocess
    import sys
    import time
    import urllib.request

    proc = subprocess.Popen([sys.executable, str(script), *args], env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"the {what} did not start")
