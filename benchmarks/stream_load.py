"""Load for generation and embedding servers, from its own process (never the server's): N clients,
each a closed loop of requests on its own keep-alive connection (aiohttp on uvloop when present).

Streaming generation (``--api oip`` for bigmodel's ``generate_stream``, ``--api peer`` for
benchmarks/lm_peer.py): every client sends ``--requests`` prompts one after the other and reads
the Server-Sent Events as they arrive. Time to first token = request sent -> first event; inter-token
latency = the gaps between a request's successive events (an event holds whole characters, so one
byte-level token each unless a multi-byte character spans several); aggregate tokens/s = every
completion token / (first request sent -> last stream ended).

    python benchmarks/stream_load.py --api oip --url URL --concurrency 16 --requests 2 --max-tokens 128

Embeddings (``--api openai-embed`` or ``--api peer-embed``): every client sends one sentence per
request (cycling through ``--sentences-file``) for ``--duration`` seconds after ``--warmup``.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time

import aiohttp


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))]


def gen_body(api: str, prompt: str, max_tokens: int) -> dict:
    if api == "oip":
        return {"text_input": prompt, "parameters": {"max_tokens": max_tokens, "temperature": 0.0}}
    return {"text_input": prompt, "max_tokens": max_tokens}


async def one_stream(session: aiohttp.ClientSession, args, prompt: str, out: dict) -> None:
    t0 = time.perf_counter()
    times, tokens = [], 0
    async with session.post(args.url, json=gen_body(args.api, prompt, args.max_tokens)) as resp:
        if resp.status != 200:
            out["errors"].append(f"{resp.status}: {(await resp.text())[:200]}")
            return
        async for line in resp.content:  # one line at a time, as the server flushes them
            if not line.startswith(b"data: "):
                continue
            now = time.perf_counter()
            ev = json.loads(line[6:])
            if "error" in ev:
                out["errors"].append(str(ev["error"])[:200])
                return
            times.append(now)
            if "finish_reason" in ev:
                tokens = ev.get("completion_tokens") or ev.get("details", {}).get("completion_tokens", 0)
                break
    if not times:
        out["errors"].append("no events")
        return
    out["ttft"].append(times[0] - t0)
    out["itl"] += [b - a for a, b in itertools.pairwise(times)]
    out["tokens"] += tokens
    out["events"] += len(times)
    out["done"] = max(out["done"], times[-1])


async def generation(args) -> dict:
    out: dict = {"ttft": [], "itl": [], "tokens": 0, "events": 0, "errors": [], "done": 0.0}
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    conn = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=conn, headers=headers, timeout=timeout) as session:
        if args.warmup_requests:  # one short request: connections open, first-call costs paid
            warm = {"ttft": [], "itl": [], "tokens": 0, "events": 0, "errors": [], "done": 0.0}
            await one_stream(session, argparse.Namespace(**{**vars(args), "max_tokens": 4}), "warm up", warm)

        async def client(i: int) -> None:
            for r in range(args.requests):
                await one_stream(session, args, f"Client {i:02d}, request {r}: once upon a time", out)

        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(args.concurrency)))
    wall = (out["done"] or time.perf_counter()) - t0
    ms = 1000.0
    return {
        "tokens": out["tokens"],
        "seconds": wall,
        "tokens_per_s": out["tokens"] / wall if wall > 0 else 0.0,
        "ttft_p50_ms": percentile(out["ttft"], 50) * ms,
        "ttft_p99_ms": percentile(out["ttft"], 99) * ms,
        "itl_p50_ms": percentile(out["itl"], 50) * ms,
        "itl_p99_ms": percentile(out["itl"], 99) * ms,
        "events": out["events"],
        "streams": len(out["ttft"]),
        "errors": out["errors"][:5],
        "failed": len(out["errors"]),
    }


async def embeddings(args) -> dict:
    with open(args.sentences_file) as f:
        sentences = [s.strip() for s in f if s.strip()]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    conn = aiohttp.TCPConnector(limit=args.concurrency)
    lat: list[float] = []
    state = {"n": 0, "failed": 0, "start": float("inf"), "stop": float("inf")}

    def body(i: int) -> dict:
        s = sentences[i % len(sentences)]
        return (
            {"model": args.model, "input": s, "encoding_format": "float"}
            if args.api == "openai-embed"
            else {"text": s}
        )

    async with aiohttp.ClientSession(connector=conn, headers=headers) as session:

        async def client(c: int) -> None:
            i = c
            while True:
                t = time.perf_counter()
                if t >= state["stop"]:
                    return
                async with session.post(args.url, json=body(i)) as resp:
                    await resp.read()
                    ok = resp.status == 200
                now = time.perf_counter()
                if state["start"] <= t and now <= state["stop"]:
                    lat.append(now - t)
                    state["n"] += 1
                    state["failed"] += not ok
                i += args.concurrency

        t0 = time.perf_counter()
        state["start"], state["stop"] = t0 + args.warmup, t0 + args.warmup + args.duration
        await asyncio.gather(*(client(c) for c in range(args.concurrency)))
    return {
        "sentences_per_s": state["n"] / args.duration,
        "requests": state["n"],
        "failed": state["failed"],
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--api", choices=["oip", "peer", "openai-embed", "peer-embed"], required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--api-key", default="")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests", type=int, default=1, help="generation: requests per client, in turn")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--warmup-requests", type=int, default=1)
    p.add_argument("--model", default="minilm")
    p.add_argument("--sentences-file", default="")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=1.0)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    run = generation if args.api in ("oip", "peer") else embeddings
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
