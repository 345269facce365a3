"""The GPU paths, checked in under 5 minutes on one GPU (``make gpu-check``).

No CI machine has a GPU, so these paths run only when a GPU is at hand. Each check drives the real
``bigmodel`` CLI in a subprocess with its own time limit and says passed, FAILED or skipped (with
why); the table goes to stdout and, with ``--json FILE``, to a file for BENCHMARKS.md.

  training on CUDA (DDP on 1 GPU; NCCL with 2 processes when 2 GPUs are present), FSDP, FSDP in
  bf16, ``--compile``; serving and generation on CUDA are listed as skipped until they exist.

Run with any Python that has a CUDA build of torch and bigmodel's dependencies:
``PYTHON=/path/to/python make gpu-check`` (``python benchmarks/gpu_check.py --json out.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _bigmodel(*args: str) -> list[str]:
    return [sys.executable, "-m", "bigmodel", *args]


def checks(gpus: int, tmp: Path, device: str = "cuda") -> list[tuple[str, list[str] | str, int]]:
    """(name, command or the reason it is skipped, time limit in seconds)."""
    lm = ["--dataset", "text", "--model", "transformer", "--size", "mini", "--max-steps", "30"]
    tab = ["--dataset", "digits", "--epochs", "2"]
    two: list[str] | str = (
        _bigmodel(
            "train", *tab, "--device", device, "--workers", "2", "--run-dir", str(tmp / "nccl2"), "--json"
        )
        if gpus >= 2
        else "one GPU: NCCL across 2 processes needs 2"
    )
    return [
        ("train, CUDA, DDP on 1 GPU", _bigmodel("train", *tab, "--device", device, "--run-dir", str(tmp / "ddp1"), "--json"), 120),
        ("train, CUDA, NCCL, 2 processes", two, 150),
        ("train, CUDA, --compile", _bigmodel("train", *tab, "--device", device, "--compile", "--run-dir", str(tmp / "compile"), "--json"), 180),
        ("train LM, CUDA, FSDP", _bigmodel("train", *lm, "--device", device, "--strategy", "fsdp", "--run-dir", str(tmp / "fsdp"), "--json"), 150),
        (
            "train LM, CUDA, FSDP bf16",
            _bigmodel("train", *lm, "--device", device, "--strategy", "fsdp", "--set", "dist.mixed_precision=bf16", "--run-dir", str(tmp / "bf16"), "--json"),
            150,
        ),
        ("serve on CUDA", "bigmodel serve runs models on CPU (no --device yet)", 0),
        ("generate on CUDA", "text generation is not built yet (issue: big models served)", 0),
    ]  # fmt: skip


def run_check(cmd: list[str], limit: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "FAILED", "seconds": limit, "detail": f"no answer in {limit} s"}
    seconds = round(time.perf_counter() - t0, 1)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["(no output)"]
        return {"status": "FAILED", "seconds": seconds, "detail": f"exit {proc.returncode}: {tail[0][:300]}"}
    detail = ""
    try:
        out = json.loads(proc.stdout)
        metrics = out.get("metrics", out) if isinstance(out, dict) else {}
        detail = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))[:200]
    except (json.JSONDecodeError, AttributeError):
        pass
    return {"status": "passed", "seconds": seconds, "detail": detail}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    ap.add_argument("--device", default="cuda", help="cpu: try the same commands without a GPU (slow)")
    args = ap.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); nothing was run")
        return 2
    gpus = torch.cuda.device_count() if args.device == "cuda" else 2
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU (dry run)"
    device = f"{gpus} x {name}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    print(f"gpu-check on {device}")
    results = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name, cmd, limit in checks(gpus, Path(tmp), args.device):
            res = (
                {"status": "skipped", "seconds": 0, "detail": cmd}
                if isinstance(cmd, str)
                else run_check(cmd, limit)
            )
            results.append({"check": name, **res})
            print(f"{res['status']:>8}  {name:<32} {res['seconds']:>6} s  {res['detail']}", flush=True)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M")
        out.write_text(json.dumps({"date": stamp, "device": device, "results": results}, indent=2) + "\n")
    return 1 if any(r["status"] == "FAILED" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
