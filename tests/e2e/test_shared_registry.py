"""Two ``bigmodel serve`` processes on one PostgreSQL registry: moving an alias reaches both servers
within a few poll intervals, while clients keep both busy, and no request fails on the way."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bigmodel.registry import Registry
from bigmodel.serve.launch import ServerProcess
from tests.models import make_model_dir

POLL_S = 0.2


def _rows(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, 6)) * 2 + np.arange(6)).astype(np.float32)


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return dict(json.loads(r.read()))


def _infer(url: str, x: np.ndarray) -> tuple[str, list[float]]:
    """(the version that answered, its probabilities) for rows ``x`` of model ``sw``."""
    body = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
    }
    req = urllib.request.Request(
        f"{url}/v2/models/sw/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        out = json.loads(r.read())
    probs = next(o for o in out["outputs"] if o["name"] == "probabilities")
    return str(out["model_version"]), [float(p) for p in probs["data"]]


def test_two_servers_on_one_postgresql_registry_follow_an_alias(tmp_path: Path, postgres_url: str):
    env = {"BIGMODEL_REGISTRY_DB": postgres_url, "BIGMODEL_HOME": str(tmp_path / "home")}
    reg = Registry(tmp_path / "registry", db_url=postgres_url)
    for seed in (5, 6):  # two different models: their answers differ
        reg.register(make_model_dir(tmp_path / f"sw{seed}", seed=seed), "sw")
    reg.alias("sw", 1, "production")
    x = _rows(2, seed=7)
    args = ["--registry", str(tmp_path / "registry"), "--models", "sw", "--poll-interval-s", str(POLL_S)]
    with ServerProcess(args, env=env) as a, ServerProcess(args, env=env) as b:
        servers = {"a": a.url, "b": b.url}
        assert all(_infer(url, x)[0] == "1" for url in servers.values())
        seen: dict[str, list[str]] = {name: [] for name in servers}
        answers: dict[str, dict[str, list[float]]] = {name: {} for name in servers}
        errors: list[str] = []
        stop = threading.Event()

        def client(name: str) -> None:
            while not stop.is_set():
                try:
                    version, probs = _infer(servers[name], x)
                except Exception as err:  # any failed request fails the test
                    errors.append(f"{name}: {err!r}")
                    return
                seen[name].append(version)
                answers[name].setdefault(version, probs)

        threads = [threading.Thread(target=client, args=(n,)) for n in servers for _ in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)  # both busy on version 1
            moved = time.monotonic()
            reg.alias("sw", 2, "production")
            switched: dict[str, float] = {}
            while len(switched) < len(servers) and time.monotonic() - moved < 30 and not errors:
                for name, url in servers.items():
                    if name not in switched and _get(f"{url}/v2/models/sw")["parameters"]["version"] == "2":
                        switched[name] = time.monotonic() - moved
                time.sleep(0.02)
            time.sleep(0.5)  # more requests after the switch
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert not errors, errors
        assert set(switched) == set(servers), f"not switched after 30 s: {switched}"
        assert max(switched.values()) < 10 * POLL_S + 3, switched  # a few poll intervals (+ the load)
        for name in servers:
            versions = seen[name]
            assert versions and versions[0] == "1" and versions[-1] == "2", name
            assert set(versions) == {"1", "2"}
            assert not np.allclose(answers[name]["1"], answers[name]["2"])  # a different model answers
        assert all(np.allclose(answers["a"][v], answers["b"][v]) for v in ("1", "2"))
        print(f"switched after {switched} s; requests {[len(v) for v in seen.values()]}")
        reg.engine.dispose()
        assert a.stop() == 0 and b.stop() == 0
