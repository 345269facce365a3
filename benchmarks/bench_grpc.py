"""gRPC vs REST on one `bigmodel serve` process: per-request overhead at concurrency 1 and requests/s
at 64 clients, side by side in one run.

The server serves both ports (``--grpc-port``) with the API key, metrics and batching on; the model is
bench_serve's small MLP (64 features, 256-256, 10 classes), one row per request, one torch thread.
Both loads come from the same C client, nghttp2's `h2load` (`apt-get install nghttp2-client`), in
its own process: HTTP/1.1 keep-alive connections with an OIP JSON body for REST, HTTP/2 with one
serialized ``ModelInferRequest`` (rows as ``raw_input_contents``) for gRPC, one connection per
client, each sending its next request when the answer arrives. Without h2load the two Python load
generators (loadgen.py, grpc_loadgen.py) stand in, and the notes say so.
Overhead = mean latency at concurrency 1 minus the model's own forward time in process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path

from bench_serve import KEY, SMALL, body_file, in_process_ms, load, make_models
from grpc_loadgen import request_bytes

HERE = Path(__file__).resolve().parent
QUICK = bool(os.environ.get("BENCH_QUICK"))
AUTH = f"authorization: Bearer {KEY}"


def h2load(url: str, data: Path, content_type: str, clients: int, seconds: float, h1: bool) -> dict:
    """One closed-loop run of h2load -> {rps, mean_ms}."""
    cmd = ["h2load", *(["--h1"] if h1 else []), "-D", f"{seconds:g}", "--warm-up-time=1"]
    cmd += ["-c", str(clients), "-m", "1", "-d", str(data), "-H", f"content-type: {content_type}", "-H", AUTH]
    cmd += [] if h1 else ["-H", "te: trailers"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    mean_ms = float(mean[:-2]) if mean.endswith("ms") else float(mean[:-2]) / 1000
    return {"rps": rps, "mean_ms": mean_ms}


def python_grpc_load(target: str, clients: int, seconds: float) -> dict:
    cmd = [sys.executable, str(HERE / "grpc_loadgen.py"), "--target", target, "--model", "small"]
    cmd += ["--features", str(SMALL[0]), "--api-key", KEY, "--concurrency", str(clients)]
    cmd += ["--duration", str(seconds), "--warmup", "1"]
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout)
    return {"rps": r["rps"], "mean_ms": r["p50_ms"]}


def failures(url: str) -> int:
    """Requests the server answered with anything but 200 (gRPC errors too: h2load sees HTTP 200)."""
    req = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"})
    bad = 0
    for line in urllib.request.urlopen(req).read().decode().splitlines():
        if line.startswith("bigmodel_inference_requests_total{") and 'status="200"' not in line:
            bad += int(float(line.split()[-1]))
    return bad


def run(seconds: float | None = None) -> dict:
    """``seconds``: length of each measured run (default 6, 2 with BENCH_QUICK)."""
    from bigmodel.serve.launch import ServerProcess

    work = HERE / ".work" / "serve"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BIGMODEL_HOME": str(work / "home")}
    os.environ["OMP_NUM_THREADS"] = "1"
    paths = make_models(work)
    model_ms = in_process_ms(paths["small"])
    body = body_file(work, SMALL[0])
    msg = request_bytes("small", SMALL[0])
    grpc_body = work / "grpc_body.bin"
    grpc_body.write_bytes(b"\0" + struct.pack(">I", len(msg)) + msg)  # gRPC's length-prefixed frame
    seconds = seconds or (2.0 if QUICK else 6.0)
    c_client = bool(shutil.which("h2load"))
    args = ["--registry", str(paths["registry"]), "--models", "small:1", "--api-key", KEY]
    args += ["--grpc-port", "0", "--max-batch-size", "64", "--access-log", "off"]
    rows, best = [], {}
    with ServerProcess(args, env=env) as server:
        rest_url = f"{server.url}/v2/models/small/infer"
        grpc_url = f"http://{server.info['grpc_url']}/inference.GRPCInferenceService/ModelInfer"

        def measure(proto: str, clients: int) -> dict:
            if c_client:
                if proto == "REST":
                    return h2load(rest_url, body, "application/json", clients, seconds, h1=True)
                return h2load(grpc_url, grpc_body, "application/grpc", clients, seconds, h1=False)
            if proto == "REST":
                r = load(rest_url, body, clients, seconds, auth=True)
                return {"rps": r["rps"], "mean_ms": r["p50_ms"]}
            return python_grpc_load(server.info["grpc_url"], clients, seconds)

        for clients in (1, 64):
            for _ in range(1 if QUICK else 2):  # alternate, so drift on a shared machine hits both alike
                for proto in ("REST", "gRPC"):
                    r = measure(proto, clients)
                    if r["rps"] > best.get((proto, clients), {"rps": -1})["rps"]:
                        best[(proto, clients)] = r
            for proto in ("REST", "gRPC"):
                r = best[(proto, clients)]
                overhead = round(r["mean_ms"] - model_ms, 3) if clients == 1 else ""
                rows.append([proto, clients, round(r["rps"]), round(r["mean_ms"], 3), overhead])
        # the ceiling of grpcio's server here: an empty call (ServerLive) that does no work
        empty = work / "grpc_empty.bin"
        empty.write_bytes(b"\0" + struct.pack(">I", 0))
        live_url = grpc_url.replace("/ModelInfer", "/ServerLive")
        live = h2load(live_url, empty, "application/grpc", 64, seconds, h1=False) if c_client else None
        if live:
            rows.append(
                ["gRPC ServerLive (empty call)", 64, round(live["rps"]), round(live["mean_ms"], 3), ""]
            )
        failed = failures(server.url)
    r1, g1, r64, g64 = best["REST", 1], best["gRPC", 1], best["REST", 64], best["gRPC", 64]
    client = "h2load (C, nghttp2)" if c_client else "Python load generators (h2load not installed)"
    notes = [
        f"Load: {client}, in a separate process; {'one run' if QUICK else 'best of two alternating runs'} "
        f"of {seconds:g} s each; requests answered with anything but 200 over the whole run: {failed}.",
        f"The model's own batch-1 forward in process: {model_ms:.3f} ms; overhead = mean latency at "
        "1 client minus it.",
        f"1 client: gRPC {g1['mean_ms']:.3f} ms vs REST {r1['mean_ms']:.3f} ms per request "
        f"(gRPC/REST {g1['mean_ms'] / r1['mean_ms']:.2f}x).",
        f"64 clients: gRPC {g64['rps']:,.0f} req/s vs REST {r64['rps']:,.0f} req/s "
        f"(gRPC/REST {g64['rps'] / r64['rps']:.2f}x), both through the same batcher.",
        "gRPC is served by grpcio's asyncio server in the same process and event loop as REST "
        "(uvicorn + httptools). The empty-call row is that server's own ceiling here; ModelInfer's "
        "distance below it is our handler (protobuf decode/encode, batcher hand-off, metrics).",
    ]
    return {
        "title": "Serving: gRPC vs REST (one process, both ports)",
        "header": ["protocol", "clients", "req/s", "mean ms", "overhead ms (1 client)"],
        "rows": rows,
        "notes": notes,
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, help="length of each measured run (default 6)")
    print(json.dumps(run(parser.parse_args().seconds), indent=2))
