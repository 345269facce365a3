"""A closed-loop gRPC load generator for the OIP ``ModelInfer`` call: N concurrent callers on one
HTTP/2 channel (what tritonclient.grpc.aio does), each sending its next request as soon as the answer
arrives, from this separate process. The request is serialized once, with the rows as
``raw_input_contents``, so the client costs as little as benchmarks/loadgen.py's HTTP one.

    python benchmarks/grpc_loadgen.py --target 127.0.0.1:8081 --model m --features 64 \
        --concurrency 64 --duration 5 --warmup 1 [--api-key KEY]

Prints one JSON object shaped like loadgen.py's: requests/s, status counts, latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
import numpy as np

from bigmodel.serve.grpc_gen import inference_pb2 as pb
from loadgen import percentile

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def request_bytes(model: str, features: int) -> bytes:
    x = np.random.default_rng(1).standard_normal((1, features)).astype(np.float32)
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req.SerializeToString()


async def run(args: argparse.Namespace) -> dict:
    body = request_bytes(args.model, args.features)
    meta = (("authorization", f"Bearer {args.api_key}"),) if args.api_key else None
    lat: list[float] = []
    status: dict[str, int] = {}
    async with grpc.aio.insecure_channel(args.target) as channel:
        call = channel.unary_unary(METHOD)  # bytes in, bytes out: no client-side (de)serializing
        await call(body, metadata=meta, timeout=10)  # connect before the clock starts
        t = time.perf_counter()
        start, stop = t + args.warmup, t + args.warmup + args.duration

        async def caller() -> None:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop:
                    return
                try:
                    await call(body, metadata=meta, timeout=10)
                    code = "OK"
                except grpc.aio.AioRpcError as err:
                    code = err.code().name
                now = time.perf_counter()
                if start <= t0 and now <= stop:
                    lat.append(now - t0)
                    status[code] = status.get(code, 0) + 1

        await asyncio.gather(*(caller() for _ in range(args.concurrency)))
    return {
        "requests": len(lat),
        "rps": len(lat) / args.duration,
        "status": status,
        "connection_errors": 0,
        "p50_ms": percentile(lat, 50) * 1000,
        "p90_ms": percentile(lat, 90) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "concurrency": args.concurrency,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--features", type=int, required=True)
    p.add_argument("--api-key", default="")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
