"""Big models: FSDP vs DDP memory and speed at 2 workers, and resume equality after failures.

1. Peak RSS per worker, DDP vs FSDP, for the largest named transformer (``large``, 152M
   parameters; DDP holds it on this machine) on the built-in ``pysource`` text, 2 steps of AdamW at
   a global batch of 2 sequences of 256 bytes (target: FSDP <= 0.6x DDP). Measured at the end of the
   training steps, before the final checkpoint and the model export.
2. samples/s, DDP vs FSDP, on ``small`` (10.9M) that both hold: 15 steps at batch 16 (gloo has no
   reduce-scatter, so FSDP is expected to be slower on CPU; the ratio is reported as it is).
3. Resume equality: (a) an MLP run on 2 workers with ``--max-restarts 1`` whose worker is killed with
   SIGKILL after its first checkpoint, vs the same run uninterrupted; (b) an FSDP run on 2 workers
   resumed from its mid-run checkpoint on 1 worker (resharded), vs the 2-worker run. Max abs weight
   difference.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_file

from bigmodel import TrainConfig, generate_synthetic, train
from bigmodel.data.text import generate_text

BIN = Path(sys.executable).parent


def _lm(run: Path, size: str, steps: int, batch: int, **dist: Any) -> dict:
    cfg = {
        "data": {"dataset": "pysource"},
        "model": {"name": "transformer", "size": size},
        "optim": {"name": "adamw", "lr": 3e-4},
        "batch_size": batch,
        "max_steps": steps,
        "epochs": 1,
        "checkpoint_every": 0,
        "eval_rows": 2 * batch,
        "run_dir": str(run),
        "progress": False,
        "dist": {"workers": 2, **dist},
    }
    return train(TrainConfig.model_validate(cfg))


def _diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def _kill_and_restart(work: Path) -> float:
    data = work / "synth"
    generate_synthetic(data, rows=40000, features=16, seed=2)
    args = [
        "train", "--dataset", str(data), "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9",
        "--batch-size", "64", "--epochs", "1", "--hidden", "128,64", "--workers", "2",
        "--checkpoint-every", "50", "--set", "model.dropout=0.1", "--no-progress",
    ]  # fmt: skip
    subprocess.run(
        [str(BIN / "bigmodel"), *args, "--run-dir", str(work / "ref")], check=True, capture_output=True
    )
    import psutil

    killed = work / "killed"
    proc = subprocess.Popen(
        [str(BIN / "bigmodel"), *args, "--run-dir", str(killed), "--max-restarts", "1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not any((killed / "checkpoints").glob("step-*")):
        if proc.poll() is not None:
            raise RuntimeError("run ended before its first checkpoint")
        time.sleep(0.01)
    kids = psutil.Process(proc.pid).children(recursive=True)
    workers = sorted((p for p in kids if "spawn_main" in " ".join(p.cmdline())), key=lambda p: p.pid)
    workers[-1].send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(err[-2000:])
    assert json.loads(out.strip().splitlines()[-1])["restarts"] == 1
    return _diff(work / "ref", killed)


def _reshard(work: Path) -> float:
    text = work / "text"
    generate_text(text, n_bytes=1_000_000, context=128, seed=0)
    base = {
        "data": {"dataset": str(text)},
        "model": {"name": "transformer", "size": "mini"},
        "optim": {"name": "adamw", "lr": 1e-3},
        "batch_size": 16,
        "max_steps": 40,
        "checkpoint_every": 20,
        "keep_checkpoints": 5,
        "eval_rows": 256,
        "progress": False,
    }
    two = work / "fsdp2"
    train(
        TrainConfig.model_validate({**base, "run_dir": str(two), "dist": {"workers": 2, "strategy": "fsdp"}})
    )
    one = work / "fsdp1"
    shutil.copytree(two, one)
    for ck in (one / "checkpoints").glob("step-*"):
        if not ck.name.startswith("step-000000020-"):
            shutil.rmtree(ck)
    cfg = yaml.safe_load((two / "config.yaml").read_text())
    cfg.update(run_dir=str(one), resume=True, dist={"workers": 1, "strategy": "fsdp"})
    train(TrainConfig.model_validate(cfg))
    return _diff(two, one)


def run() -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        mem = {s: _lm(work / f"mem-{s}", "large", 2, 2, strategy=s) for s in ("ddp", "fsdp")}
        speed = {s: _lm(work / f"speed-{s}", "small", 15, 16, strategy=s) for s in ("ddp", "fsdp")}
        kill_diff = _kill_and_restart(work)
        reshard_diff = _reshard(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mem_ratio = mem["fsdp"]["peak_rss_mb"] / mem["ddp"]["peak_rss_mb"]
    speed_ratio = speed["fsdp"]["samples_per_s"] / speed["ddp"]["samples_per_s"]
    p_large, p_small = mem["ddp"]["params"], speed["ddp"]["params"]
    rows = [
        [f"peak RSS / worker, transformer large ({p_large / 1e6:.0f}M), 2 workers", f"{mem['ddp']['peak_rss_mb']:,.0f} MiB", f"{mem['fsdp']['peak_rss_mb']:,.0f} MiB", f"{mem_ratio:.2f}"],
        [f"samples/s, transformer small ({p_small / 1e6:.1f}M), 2 workers", f"{speed['ddp']['samples_per_s']:.1f}", f"{speed['fsdp']['samples_per_s']:.1f}", f"{speed_ratio:.2f}"],
        ["SIGKILL a worker + elastic restart vs uninterrupted (MLP, 2 workers): max abs diff", f"{kill_diff:.1e}", "", ""],
        ["FSDP saved on 2 workers, resumed on 1 vs 2 throughout (transformer mini): max abs diff", "", f"{reshard_diff:.1e}", ""],
    ]  # fmt: skip
    notes = [
        f"FSDP/DDP peak memory per worker: {mem_ratio:.2f} (target <= 0.6: {'met' if mem_ratio <= 0.6 else 'NOT met'}). "
        "DDP holds parameters, gradients, its gradient buckets and Adam's two moments in full; FSDP holds "
        "1/2 of each plus one gathered block at a time. FSDP workers are started with "
        "MALLOC_MMAP_THRESHOLD_=1 MiB so that each block's freed gather buffers go back to the OS "
        "(glibc would otherwise keep them and RSS would not show the sharding); DDP runs with defaults.",
        f"FSDP/DDP samples/s: {speed_ratio:.2f}. gloo has no native reduce-scatter/all-gather pair as fast as "
        "all-reduce, and FSDP gathers each block's parameters in forward and again in backward: FSDP is for "
        "models that do not fit, not for speed on CPU.",
        f"Resume after SIGKILL with elastic restart: {kill_diff:.1e} (same world size: RNG restored, exact). "
        f"Resharded resume 2 -> 1 workers: {reshard_diff:.1e} (float rounding of the gradient reduction).",
    ]
    return {
        "title": "Sharded training (FSDP vs DDP) and resume equality",
        "header": ["what", "ddp", "fsdp", "fsdp/ddp"],
        "rows": rows,
        "notes": notes,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
