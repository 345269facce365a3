"""Serving: dynamic batching, per-request overhead, a minimal FastAPI peer, PyTorch vs ONNX Runtime.

Every server is a real `bigmodel serve` process (or the peer, benchmarks/serve_peer.py) on loopback;
the load comes from a separate process: `wrk` (C, one thread; `apt-get install wrk`) when it is on
PATH, else benchmarks/loadgen.py (asyncio + uvloop, installed by `make install`);
BENCH_LOADGEN=python forces the latter. Both are closed loops of keep-alive connections, each
sending one OIP JSON request of one row and the next as soon as the answer arrives. Inference
runs with one torch thread (OMP_NUM_THREADS=1) everywhere, the peer included.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from common import start_peer as run_peer  # noqa: E402

KEY = "bench-key"
SMALL, BIG = (64, (256, 256), 10), (1024, (4096, 4096), 10)


def make_models(work: Path) -> dict[str, Path]:
    from tests.models import make_model_dir

    from bigmodel.compress import export_onnx
    from bigmodel.registry import Registry

    reg = Registry(work / "registry")
    if not reg.models():
        f, h, k = SMALL
        small = make_model_dir(work / "small", features=f, hidden=h, labels=list(range(k)))
        reg.register(small, "small")  # version 1: PyTorch (no ONNX file)
        export_onnx(small)
        reg.register(small, "small")  # version 2: the same weights with ONNX, served by ONNX Runtime
        f, h, k = BIG
        reg.register(make_model_dir(work / "big", features=f, hidden=h, labels=list(range(k))), "big")
    return {"registry": work / "registry", "small": work / "small", "big": work / "big"}


def in_process_ms(model_dir: Path, runtime: str = "torch", reps: int = 300) -> float:
    """Median time of one batch-1 forward + postprocessing in this process: what a request costs
    the model itself, without any serving."""
    import torch

    from bigmodel.serve.runtime import ModelRuntime

    torch.set_num_threads(1)
    rt = ModelRuntime(model_dir, runtime, threads=1)  # type: ignore[arg-type]
    x = np.random.default_rng(0).standard_normal((1, len(rt.features))).astype(np.float32)
    for _ in range(20):
        rt.predict(x)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        rt.predict(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def body_file(work: Path, features: int) -> Path:
    x = np.random.default_rng(1).standard_normal(features).round(4).tolist()
    path = work / f"body{features}.json"
    path.write_text(
        json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, features], "data": x}]})
    )
    return path


def use_wrk() -> bool:
    return bool(shutil.which("wrk")) and os.environ.get("BENCH_LOADGEN", "auto") != "python"


def load(url: str, body: Path, concurrency: int, seconds: float, auth: bool) -> dict:
    """Closed-loop load from a separate process -> {rps, p50_ms, p99_ms, failed}."""
    if use_wrk():
        env = {**os.environ, "BODY_FILE": str(body), "AUTH": f"Bearer {KEY}" if auth else ""}
        base = ["wrk", "-t1", f"-c{concurrency}", "-s", str(HERE / "wrk_post.lua"), "--timeout", "10s", url]
        subprocess.run([*base[:3], "-d1s", *base[3:]], env=env, capture_output=True, check=True)  # warm up
        out = subprocess.run(
            [*base[:3], f"-d{seconds:g}s", *base[3:]], env=env, capture_output=True, text=True, check=True
        )
        r = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT"))[7:])
        return {
            "rps": r["requests"] / (r["duration_us"] / 1e6),
            "p50_ms": r["p50_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000,
            "failed": r["non2xx"] + r["errors"],
        }
    cmd = [sys.executable, str(HERE / "loadgen.py"), "--url", url, "--body-file", str(body)]
    cmd += ["--concurrency", str(concurrency), "--duration", str(seconds), "--warmup", "1"]
    if auth:
        cmd += ["--header", f"Authorization: Bearer {KEY}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:  # say why: the load generator's own error, not just its exit code
        raise RuntimeError(f"loadgen failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    r = json.loads(proc.stdout)
    failed = sum(v for k, v in r["status"].items() if k != "200") + r["connection_errors"]
    return {"rps": r["rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "failed": failed}


def start_peer(model_dir: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return run_peer(HERE / "serve_peer.py", [str(model_dir), str(port)], port, env, "FastAPI peer")


def _mean(runs: list[dict]) -> dict:
    return {
        "rps": statistics.mean(r["rps"] for r in runs),
        "p50_ms": statistics.mean(r["p50_ms"] for r in runs),
        "p99_ms": max(r["p99_ms"] for r in runs),
        "failed": sum(r["failed"] for r in runs),
    }


def rss_mb(url: str) -> float:
    req = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"})
    for line in urllib.request.urlopen(req).read().decode().splitlines():
        if line.startswith("process_resident_memory_bytes"):
            return float(line.split()[1]) / 2**20
    return float("nan")


def run() -> dict:
    from bigmodel.serve.launch import ServerProcess

    work = HERE / ".work" / "serve"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BIGMODEL_HOME": str(work / "home")}
    os.environ["OMP_NUM_THREADS"] = "1"
    paths = make_models(work)
    small_ms = in_process_ms(paths["small"])
    small_ort_ms = in_process_ms(paths["small"], "onnxruntime")
    big_ms = in_process_ms(paths["big"], reps=30)
    b_small, b_big = body_file(work, SMALL[0]), body_file(work, BIG[0])
    reg = ["--registry", str(paths["registry"])]
    # every feature on: API key, access log (to a file), metrics, validation, batching, timeouts, body limit
    full = ["--api-key", KEY, "--access-log", str(work / "access.log"), "--max-batch-size", "64"]
    loadgen = "wrk (1 thread)" if use_wrk() else "benchmarks/loadgen.py (asyncio, 1 process)"

    with ExitStack() as stack:
        small = stack.enter_context(ServerProcess([*reg, "--models", "small:1,small:2", *full], env=env))
        big64 = stack.enter_context(ServerProcess([*reg, "--models", "big", *full], env=env))
        big1 = stack.enter_context(
            ServerProcess([*reg, "--models", "big", *full[:4], "--max-batch-size", "1"], env=env)
        )
        peer = start_peer(paths["small"], 18799, env)
        stack.callback(peer.wait)
        stack.callback(peer.terminate)
        torch_url = small.url + "/v2/models/small/versions/1/infer"
        ort_url = small.url + "/v2/models/small/versions/2/infer"
        peer_url = "http://127.0.0.1:18799/v2/models/small/infer"

        # (c) peers, interleaved so that a noisy neighbour hits both alike
        ours, theirs = [], []
        for _ in range(2):
            ours.append(load(torch_url, b_small, 64, 6, auth=True))
            theirs.append(load(peer_url, b_small, 64, 6, auth=False))
        # (a) dynamic batching on a model whose batch-1 forward costs > 1 ms, interleaved too
        batched_runs, single_runs = [], []
        for _ in range(2):
            batched_runs.append(load(big64.url + "/v2/models/big/infer", b_big, 64, 6, auth=True))
            single_runs.append(load(big1.url + "/v2/models/big/infer", b_big, 64, 6, auth=True))
        batched, single = _mean(batched_runs), _mean(single_runs)
        # (b) per-request overhead at concurrency 1
        c1_small = load(torch_url, b_small, 1, 5, auth=True)
        c1_big = load(big64.url + "/v2/models/big/infer", b_big, 1, 5, auth=True)
        # (d) runtimes side by side on the same server
        ort64 = load(ort_url, b_small, 64, 6, auth=True)
        torch64 = load(torch_url, b_small, 64, 6, auth=True)
        ort1 = load(ort_url, b_small, 1, 4, auth=True)
        rss = rss_mb(small.url)

    o, t = _mean(ours), _mean(theirs)
    ours_rps, peer_rps, ours_p99, peer_p99 = o["rps"], t["rps"], o["p99_ms"], t["p99_ms"]
    ratio_a = batched["rps"] / single["rps"]
    ratio_c = ours_rps / peer_rps
    over_b = c1_small["p50_ms"] - small_ms
    failed = sum(r["failed"] for r in [o, t, batched, single, c1_small, c1_big, ort64, torch64, ort1])
    ok = lambda cond: "yes" if cond else "NO"  # noqa: E731
    rows = [
        [
            "(a) dynamic batching, MLP 1024-4096-4096-10, 64 clients: req/s",
            round(batched["rps"]),
            f"{round(single['rps'])} (max batch 1)",
            f"{ratio_a:.2f}x",
            ">= 3x",
            ok(ratio_a >= 3),
        ],
        [
            "(b) p50 at concurrency 1 minus in-process model time, MLP 64-256-256-10: ms",
            round(c1_small["p50_ms"], 3),
            f"{small_ms:.3f} in-process",
            f"+{over_b:.3f} ms",
            "<= 1 ms",
            ok(over_b <= 1),
        ],
        [
            "(b) same, MLP 1024-4096-4096-10: ms",
            round(c1_big["p50_ms"], 3),
            f"{big_ms:.3f} in-process",
            f"+{c1_big['p50_ms'] - big_ms:.3f} ms",
            "-",
            "-",
        ],
        [
            "(c) every feature on vs minimal FastAPI endpoint, 64 clients: req/s",
            round(ours_rps),
            f"{round(peer_rps)} (FastAPI peer)",
            f"{ratio_c:.2f}x",
            ">= 1.0x",
            ok(ratio_c >= 1.0),
        ],
        [
            "(c) p99 latency, 64 clients: ms",
            round(ours_p99, 2),
            f"{peer_p99:.2f} (FastAPI peer)",
            "-",
            "<= 30 ms",
            ok(ours_p99 <= 30),
        ],
        [
            "(d) PyTorch runtime, 64 clients: req/s / p50 / p99 ms",
            f"{round(torch64['rps'])} / {torch64['p50_ms']:.2f} / {torch64['p99_ms']:.2f}",
            "-",
            "-",
            "-",
            "-",
        ],
        [
            "(d) ONNX Runtime, 64 clients: req/s / p50 / p99 ms",
            f"{round(ort64['rps'])} / {ort64['p50_ms']:.2f} / {ort64['p99_ms']:.2f}",
            "-",
            f"{ort64['rps'] / torch64['rps']:.2f}x PyTorch",
            "-",
            "-",
        ],
        [
            "(d) concurrency 1: p50 / p99 ms (PyTorch vs ONNX Runtime)",
            f"{c1_small['p50_ms']:.3f} / {c1_small['p99_ms']:.3f}",
            f"{ort1['p50_ms']:.3f} / {ort1['p99_ms']:.3f} (ORT)",
            f"in-process {small_ms:.3f} vs {small_ort_ms:.3f}",
            "-",
            "-",
        ],
    ]
    rounds = ", ".join(f"{a['rps']:.0f} vs {b['rps']:.0f}" for a, b in zip(ours, theirs, strict=True))
    notes = [
        f"Load: {loadgen}, closed loop, keep-alive, one OIP JSON row per request, a separate process on loopback; "
        "2-core machine, so the load generator competes with the server (and the peer is measured in the same "
        "conditions, interleaved: ours, peer, ours, peer).",
        f"(c) per round, ours vs peer req/s: {rounds}; "
        "ours with API key, access log to a file, Prometheus metrics, input validation, dynamic batching "
        "(max 64, no delay), per-request timeout and body limit; the peer (benchmarks/serve_peer.py) is one "
        "FastAPI async endpoint on the same uvicorn (uvloop + httptools): request.json(), torch forward, "
        "postprocess, dict response.",
        f"(a) in-process batch-1 forward of MLP 1024-4096-4096-10: {big_ms:.2f} ms (target >= 1 ms); "
        f"max batch 64 at {batched['p50_ms']:.1f} ms p50 vs max batch 1 at {single['p50_ms']:.1f} ms p50.",
        f"Failed requests across all runs: {failed}. Server RSS after all small-model runs: {rss:.0f} MiB.",
        "One torch thread for inference everywhere (OMP_NUM_THREADS=1, `--threads 1`).",
    ]
    return {
        "title": "Serving: Open Inference Protocol server (bigmodel serve)",
        "header": ["measurement", "bigmodel serve", "compared with", "ratio / difference", "target", "met"],
        "rows": rows,
        "notes": notes,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
