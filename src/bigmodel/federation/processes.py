"""Real processes: one Flower server and K Flower clients talking gRPC over 127.0.0.1.

``launch(cfg)`` starts them (``python -m bigmodel.federation.processes server|client ...``), records
their process ids in ``processes.json``, waits for the server and stops whatever is left. Each
client process keeps only its own shard's rows (on one machine they come out of the same prepared
dataset, cut by the shared deterministic partition) and sends only weights. A client that dies is dropped
from its round by Flower and no longer sampled; the run goes on.

Flower's supported deployment (SuperLink + SuperNodes + ``flwr run``) installs each app's
dependencies with ``uv`` into a fresh environment at run time, which cannot work offline with a
pinned local torch; ``flwr.server.start_server`` / ``flwr.compat.client.app.start_client`` (the
gRPC bidirectional-streaming transport, deprecated since Flower 1.13 but present in the pinned 1.32)
run our own code in our own environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bigmodel.errors import BigModelError
from bigmodel.federation.config import FederatedConfig, validate
from bigmodel.federation.run import CONFIG_FILE, SUMMARY_FILE, client_rows, context, make_client, serve
from bigmodel.fsutil import write_json_atomic
from bigmodel.stop import exit_process

PROCESSES_FILE = "processes.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(cfg: FederatedConfig) -> dict[str, Any]:
    """Start the server and client processes for a prepared run; return the server's summary."""
    run_dir = Path(str(cfg.out))
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    me = [sys.executable, "-m", "bigmodel.federation.processes"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLWR_TELEMETRY_ENABLED": "0"}
    server = subprocess.Popen([*me, "server", str(run_dir), address], env=env)
    clients: list[subprocess.Popen[bytes]] = []
    try:
        for k in range(cfg.clients):
            with open(logs / f"client-{k}.log", "wb") as log:
                clients.append(
                    subprocess.Popen(
                        [*me, "client", str(run_dir), address, str(k)], env=env, stdout=log, stderr=log
                    )
                )
        write_json_atomic(
            run_dir / PROCESSES_FILE,
            {
                "address": address,
                "server": server.pid,
                "clients": {str(k): p.pid for k, p in enumerate(clients)},
            },
        )
        limit = cfg.connect_timeout_s + cfg.rounds * (cfg.round_timeout_s + 5) + 60
        try:
            rc = server.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            raise BigModelError(f"federated server did not finish within {limit:.0f} s; stopped it") from None
        deadline = time.monotonic() + 15  # clients leave when the server says goodbye
        for p in clients:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        for p in [server, *clients]:
            if p.poll() is None:
                p.terminate()
        for p in [server, *clients]:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    if rc != 0:
        raise BigModelError(f"federated server process failed (exit code {rc}); client logs are in {logs}")
    summary: dict[str, Any] = json.loads((run_dir / SUMMARY_FILE).read_text())
    summary["client_exit_codes"] = {str(k): p.returncode for k, p in enumerate(clients)}
    return summary


def _server(run_dir: Path, address: str) -> int:
    cfg = validate(json.loads((run_dir / CONFIG_FILE).read_text()))
    serve(cfg, address)
    return 0


def _client(run_dir: Path, address: str, cid: int) -> int:
    from flwr.compat.client.app import start_client

    torch.set_num_threads(1)
    cfg = validate(json.loads((run_dir / CONFIG_FILE).read_text()))
    ctx = context(cfg)
    x, y = client_rows(cfg, ctx, cid)
    client = make_client(cfg, ctx, cid, x, y, in_process=False)
    start_client(
        server_address=address, client=client.to_client(), insecure=True, max_wait_time=cfg.connect_timeout_s
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bigmodel.federation.processes")
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("run_dir", type=Path)
    p.add_argument("address")
    p.add_argument("cid", nargs="?", type=int, default=0)
    args = p.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.ERROR)  # see serve()
    if args.role == "server":
        return _server(args.run_dir, args.address)
    return _client(args.run_dir, args.address, args.cid)


if __name__ == "__main__":
    exit_process(main())
