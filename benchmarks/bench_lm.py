"""Language models served (issue 17 §6): KV cache, continuous batching, a Hugging Face peer, int8.

1. KV cache, in-process: greedy tokens/s generating 256 bytes at batch 1 (size ``small``, context
   512, 16-byte prompt), with the cache vs recomputing the whole prefix every step. Target >= 5x.
2. Continuous batching: 16 concurrent streaming clients (``generate_stream``), 128 new bytes each,
   against a real ``bigmodel serve`` with the default ``--max-sequences 16`` and another with
   ``--max-sequences 1``: aggregate tokens/s (target >= 3x), time to first token and inter-token
   latency p50/p99 measured by the clients from SSE arrival times.
3. Peer: a Hugging Face ``GPT2LMHeadModel`` of the same shape behind a minimal FastAPI endpoint
   calling ``model.generate()`` per request, streamed (benchmarks/lm_peer.py): bigmodel >= 2x its
   aggregate tokens/s at 16 clients with time-to-first-token p50 no worse.
4. int8 vs fp32 (``bigmodel compress quantize LM_DIR``) on a ``small`` LM trained briefly here on
   generated text (cached in benchmarks/.work/lm): tokens/s at batch 1 (target >= 1.5x) and held-out
   bits per byte (<= 2% worse).

Servers and the peer are separate processes on loopback; the load comes from yet another process
(benchmarks/stream_load.py). One torch thread on every side (OMP_NUM_THREADS=1, ``--threads 1``,
``torch.set_num_threads(1)``). BENCH_QUICK=1 (or ``--quick``) runs one short round of each.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "lm"
sys.path.insert(0, str(ROOT))
from common import start_peer as run_peer  # noqa: E402

THREADS = 1
CLIENTS = 16
NEW_BYTES = 128
PEER_PORT = 18797


def quick() -> bool:
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


def ok(cond: bool) -> str:
    return "yes" if cond else "NO"


# ---- 1. KV cache ---------------------------------------------------------------------------


def kv_cache(rounds: int, new_tokens: int) -> dict[str, Any]:
    import torch

    from bigmodel.generation import tokens_per_second
    from bigmodel.models.transformer import SIZES, Transformer

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = Transformer(*SIZES["small"], context=512).eval()
    tokens_per_second(model, 1, 8)  # warm-up: allocator, first-call costs
    tokens_per_second(model, 1, 8, cache=False)
    cached, full = [], []
    for _ in range(rounds):  # interleaved, so a noisy neighbour hits both alike
        cached.append(tokens_per_second(model, 1, new_tokens, prompt_len=16, cache=True))
        full.append(tokens_per_second(model, 1, new_tokens, prompt_len=16, cache=False))
    return {"cached": statistics.median(cached), "recompute": statistics.median(full), "runs": (cached, full)}


# ---- 2, 3. serving ---------------------------------------------------------------------------


def lm_registry() -> Path:
    """A ``small`` LM (random weights, context 512) registered as ``lm`` in a registry under .work."""
    from tests.models import make_lm_dir

    from bigmodel.registry import Registry

    reg = Registry(WORK / "registry")
    if "lm" not in reg.models():
        reg.register(make_lm_dir(WORK / "small-random", size="small", context=512), "lm")
    return WORK / "registry"


def start_peer(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return run_peer(HERE / "lm_peer.py", [str(PEER_PORT), str(THREADS)], PEER_PORT, env, "GPT-2 FastAPI peer")


def stream_load(api: str, url: str, requests: int, new_bytes: int) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "stream_load.py"), "--api", api, "--url", url]
    cmd += ["--concurrency", str(CLIENTS), "--requests", str(requests), "--max-tokens", str(new_bytes)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"stream_load failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return json.loads(proc.stdout)


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds together: tokens/s over all their tokens and time; latencies as the rounds' medians."""
    tokens, seconds = sum(r["tokens"] for r in runs), sum(r["seconds"] for r in runs)
    out = {"tokens_per_s": tokens / seconds, "tokens": tokens, "failed": sum(r["failed"] for r in runs)}
    for k in ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms"):
        out[k] = statistics.median(r[k] for r in runs)
    out["events_per_token"] = sum(r["events"] for r in runs) / max(tokens, 1)
    return out


def serving(rounds: int, new_bytes: int, requests: int) -> dict[str, Any]:
    from bigmodel.serve.launch import ServerProcess

    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "BIGMODEL_HOME": str(WORK / "home")}
    base = [
        "--registry",
        str(lm_registry()),
        "--models",
        "lm",
        "--threads",
        str(THREADS),
        "--access-log",
        "off",
    ]
    runs: dict[str, list[dict[str, Any]]] = {"seq16": [], "seq1": [], "peer": []}
    with ExitStack() as stack:
        s16 = stack.enter_context(ServerProcess(base, env=env))  # default --max-sequences 16
        s1 = stack.enter_context(ServerProcess([*base, "--max-sequences", "1"], env=env))
        peer = start_peer(env)
        stack.callback(peer.wait)
        stack.callback(peer.terminate)
        urls = {
            "seq16": ("oip", s16.url + "/v2/models/lm/generate_stream"),
            "seq1": ("oip", s1.url + "/v2/models/lm/generate_stream"),
            "peer": ("peer", f"http://127.0.0.1:{PEER_PORT}/generate_stream"),
        }
        for api, url in urls.values():  # warm-up round, not timed: 16 short streams each
            stream_load(api, url, 1, 8)
        for _ in range(rounds):  # interleaved: 16, 1, peer, 16, 1, peer
            for name, (api, url) in urls.items():
                runs[name].append(stream_load(api, url, requests, new_bytes))
    return {k: pooled(v) for k, v in runs.items()} | {"rounds": runs}


# ---- 4. int8 ---------------------------------------------------------------------------------


def trained_small(steps: int) -> Path:
    """A ``small`` LM (context 128) trained ``steps`` Adam steps on generated text, once (cached)."""
    run = WORK / f"trained-small-{steps}"
    if (run / "model.json").exists():
        return run
    from bigmodel.config import TrainConfig
    from bigmodel.data.text import generate_text
    from bigmodel.training import train

    data = WORK / "text-data"
    if not (data / "manifest.json").exists():
        generate_text(data, n_bytes=600_000, context=128, seed=0, val_fraction=0.1)
    cfg = TrainConfig.model_validate(
        {
            "data": {"dataset": str(data)},
            "model": {"name": "transformer", "size": "small"},
            "epochs": 1,
            "max_steps": steps,
            "batch_size": 16,
            "optim": {"lr": 0.002},
            "run_dir": str(run),
            "progress": False,
            "checkpoint_every": 0,
            "eval_rows": 64,
        }
    )
    train(cfg)
    return run


def quantized(src: Path) -> tuple[Path, dict[str, Any] | str]:
    """``bigmodel compress quantize SRC`` (int8, default --max-drop) as a user runs it; cached."""
    dst = src.parent / (src.name + "-int8")
    report = src.parent / (src.name + "-int8.json")
    if (dst / "model.json").exists() and report.exists():
        return dst, json.loads(report.read_text())
    cmd = [sys.executable, "-m", "bigmodel", "compress", "quantize", str(src), "--out", str(dst)]
    cmd += ["--max-drop", "0.02", "--runs", "20", "--json", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        return dst, f"quantize failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-600:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    report.write_text(json.dumps(out, indent=2))
    return dst, out


def int8_vs_fp32(steps: int, rounds: int) -> dict[str, Any]:
    import torch

    from bigmodel import artifacts
    from bigmodel.compress.lm_measure import bits_per_byte, heldout
    from bigmodel.generation import tokens_per_second

    src = trained_small(steps)
    dst, report = quantized(src)
    if isinstance(report, str):
        return {"pending": report}
    torch.set_num_threads(THREADS)
    fp32 = artifacts.load_model(src).module.eval()
    int8 = artifacts.load_model(dst).module.eval()
    new = fp32.context - 16
    for m in (fp32, int8):
        tokens_per_second(m, 1, 8)
    tf, ti = [], []
    for _ in range(rounds):
        tf.append(tokens_per_second(fp32, 1, new))
        ti.append(tokens_per_second(int8, 1, new))
    rows = heldout(artifacts.read_meta(src), src, 64)
    return {
        "fp32_tps": statistics.median(tf),
        "int8_tps": statistics.median(ti),
        "fp32_bpb": bits_per_byte(fp32, rows),
        "int8_bpb": bits_per_byte(int8, rows),
        "new_tokens": new,
        "heldout": tuple(rows.shape),
        "report": report,
        "int8_dir": str(dst),
    }


# ---- the table -------------------------------------------------------------------------------


def run() -> dict[str, Any]:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    os.environ.setdefault("BIGMODEL_HOME", str(WORK / "home"))
    WORK.mkdir(parents=True, exist_ok=True)
    q = quick()
    kv = kv_cache(rounds=1 if q else 2, new_tokens=256)
    sv = serving(rounds=1, new_bytes=NEW_BYTES, requests=1 if q else 2)
    i8 = int8_vs_fp32(steps=150, rounds=2 if q else 4)

    kv_ratio = kv["cached"] / kv["recompute"]
    s16, s1, peer = sv["seq16"], sv["seq1"], sv["peer"]
    cb_ratio = s16["tokens_per_s"] / s1["tokens_per_s"]
    peer_ratio = s16["tokens_per_s"] / peer["tokens_per_s"]

    def lat(r: dict[str, Any]) -> str:
        return (
            f"TTFT {r['ttft_p50_ms']:.0f} / {r['ttft_p99_ms']:.0f} ms; "
            f"ITL {r['itl_p50_ms']:.1f} / {r['itl_p99_ms']:.1f} ms"
        )

    rows: list[list[Any]] = [
        [
            "1. KV cache: tokens/s, 256 bytes at batch 1 (in-process)",
            round(kv["cached"], 1),
            f"{kv['recompute']:.1f} (recompute the prefix)",
            f"{kv_ratio:.2f}x",
            ">= 5x",
            ok(kv_ratio >= 5),
        ],
        [
            f"2. continuous batching: aggregate tokens/s, {CLIENTS} streaming clients x {NEW_BYTES} bytes",
            round(s16["tokens_per_s"], 1),
            f"{s1['tokens_per_s']:.1f} (--max-sequences 1)",
            f"{cb_ratio:.2f}x",
            ">= 3x",
            ok(cb_ratio >= 3),
        ],
        ["2. latency p50 / p99, --max-sequences 16", lat(s16), "", "", "(reported)", "-"],
        ["2. latency p50 / p99, --max-sequences 1", lat(s1), "", "", "(reported)", "-"],
        [
            f"3. vs HF GPT2LMHeadModel.generate() behind FastAPI: aggregate tokens/s, {CLIENTS} clients",
            round(s16["tokens_per_s"], 1),
            f"{peer['tokens_per_s']:.1f} (peer)",
            f"{peer_ratio:.2f}x",
            ">= 2x",
            ok(peer_ratio >= 2),
        ],
        [
            "3. time to first token p50 (ms)",
            round(s16["ttft_p50_ms"]),
            f"{peer['ttft_p50_ms']:.0f} (peer)",
            f"{s16['ttft_p50_ms'] - peer['ttft_p50_ms']:+.0f} ms",
            "no worse",
            ok(s16["ttft_p50_ms"] <= peer["ttft_p50_ms"]),
        ],
        ["3. peer latency p50 / p99", lat(peer), "", "", "(reported)", "-"],
    ]
    if "pending" in i8:
        rows.append(
            ["4. int8 vs fp32 LM", "pending", i8["pending"], "", ">= 1.5x, bpb <= 2% worse", "pending"]
        )
    else:
        t_ratio = i8["int8_tps"] / i8["fp32_tps"]
        bpb_rel = i8["int8_bpb"] / i8["fp32_bpb"] - 1
        rows += [
            [
                f"4. int8 vs fp32: tokens/s at batch 1 ({i8['new_tokens']} bytes, in-process)",
                round(i8["int8_tps"], 1),
                f"{i8['fp32_tps']:.1f} (fp32)",
                f"{t_ratio:.2f}x",
                ">= 1.5x",
                ok(t_ratio >= 1.5),
            ],
            [
                "4. int8 vs fp32: held-out bits per byte",
                f"{i8['int8_bpb']:.4f}",
                f"{i8['fp32_bpb']:.4f} (fp32)",
                f"{bpb_rel * 100:+.2f}%",
                "<= +2%",
                ok(bpb_rel <= 0.02),
            ],
        ]
    failed = s16["failed"] + s1["failed"] + peer["failed"]
    notes = [
        f"One torch thread on every side ({THREADS}: OMP_NUM_THREADS, `bigmodel serve --threads 1`, "
        "torch.set_num_threads in the peer and in-process); the machine has 2 cores shared with other work, "
        "so runs are interleaved and only ratios are compared.",
        f"1: size small (6 layers, width 384, 6 heads, 10.9M parameters, context 512), random weights, "
        f"16-byte prompt, greedy; `tokens_per_second(..., cache=True|False)`, median of "
        f"{len(kv['runs'][0])} interleaved runs each (cached {[round(x, 1) for x in kv['runs'][0]]}, "
        f"recompute {[round(x, 1) for x in kv['runs'][1]]}).",
        f"2, 3: {CLIENTS} clients from one separate process (benchmarks/stream_load.py, aiohttp), each "
        f"sending {'2 requests in turn' if not q else '1 request'} of {NEW_BYTES} new bytes (greedy, distinct "
        "prompts), after an untimed warm-up round; aggregate tokens/s = completion tokens / (first request "
        "sent -> last stream ended). TTFT = request sent -> first SSE event; ITL = gaps between a stream's "
        f"successive events (events per token: bigmodel {s16['events_per_token']:.2f}, peer "
        f"{peer['events_per_token']:.2f}: random weights emit bytes that are not whole UTF-8 characters, "
        "which both sides hold back until decodable, so some gaps span 2+ tokens). Failed streams: "
        f"{failed}.",
        "With --max-sequences 1 the 16 streams queue for the one KV-cache slot: its TTFT is mostly waiting. "
        "With 16 the ITL p99 includes the steps at which newly admitted prompts are prefilled before that "
        "step's decode (the scheduler runs prefills and the batched decode in one worker thread).",
        "3: the peer (benchmarks/lm_peer.py) is GPT2LMHeadModel(n_layer 6, n_embd 384, n_head 6, vocab 256, "
        "n_positions 512, random weights), FastAPI + uvicorn, one `model.generate(max_new_tokens, "
        "do_sample=False, streamer=...)` thread per request, streamed honestly as SSE from a BaseStreamer. Its "
        "16 generate() threads run concurrently (each with 1 intra-op thread, the GIL released inside the "
        "matrix products), so it may use both cores; bigmodel's scheduler runs one batched decode step at a "
        "time on one thread.",
    ]
    if "pending" in i8:
        notes.append(f"4: pending: {i8['pending']}")
    else:
        rep = i8["report"]
        kept = rep.get("params", {}).get("kept_float")
        notes.append(
            f"4: size small at context 128, trained 150 Adam steps (batch 16, lr 0.002) on 600 kB of generated "
            f"text (`bigmodel.data.text.generate_text`, seed 0), then `bigmodel compress quantize DIR "
            f"--max-drop 0.02` (int8 Linear layers, FBGEMM dynamic int8; kept float: {kept or 'none'}). Both "
            f"cached in benchmarks/.work/lm (the first run trains: ~14 min on this shared 2-core machine). tokens/s: greedy with the KV cache, 16-byte prompt, median of "
            f"{2 if q else 4} interleaved runs; bits per byte on the first "
            f"{i8['heldout'][0]} held-out rows of {i8['heldout'][1]} bytes. quantize's own report: "
            f"speed-up b1 {rep.get('ratios', {}).get('speedup_b1', float('nan')):.2f}x, b16 "
            f"{rep.get('ratios', {}).get('speedup_b16', float('nan')):.2f}x."
        )
    met = [r[-1] for r in rows if r[-1] in ("yes", "NO", "pending")]
    notes.append(
        "all targets met"
        if all(m == "yes" for m in met)
        else "NOT all targets met: see rows marked NO" + (" / pending" if "pending" in met else "")
    )
    return {
        "title": "Language models served: KV cache, continuous batching, a Hugging Face peer, int8",
        "header": ["measurement", "bigmodel", "compared with", "ratio / difference", "target", "met"],
        "rows": rows,
        "notes": notes,
        "raw": {"kv_cache": kv, "serving": sv, "int8": {k: v for k, v in i8.items() if k != "report"}},
    }


if __name__ == "__main__":
    if "--quick" in sys.argv:
        os.environ["BENCH_QUICK"] = "1"
    print(json.dumps(run(), indent=2, default=str))
