"""The container contract, without docker: the image's entrypoint (parsed from deploy/Dockerfile) with
the ServingRuntime's args appended, run exactly as KServe would, except for two substitutions:
/mnt/models is a temp folder laid out the same way, and the container ports are free ports here.
The probes, REST and gRPC infer, the SIGTERM drain, and bad model directories refused in one line."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tg

from tests.conftest import BIN, run_cli
from tests.e2e.test_serve import reference
from tests.models import make_model_dir
from tests.unit.test_deploy_manifests import GRPC_PORT, HTTP_PORT, MODEL_DIR, entrypoint, runtime_args

NAME = "iris"  # the InferenceService's name, which KServe puts where the runtime says {{.Name}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _command(models: Path, http_port: int, grpc_port: int) -> list[str]:
    swap = {MODEL_DIR: str(models), HTTP_PORT: str(http_port), GRPC_PORT: str(grpc_port)}
    cmd = [swap.get(a, a) for a in entrypoint() + runtime_args(NAME)]
    assert cmd[0] == "bigmodel"
    return [str(BIN / "bigmodel"), *cmd[1:]]


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("kserve")
    models = make_model_dir(tmp / "mnt" / "models", seed=3)  # what the storage initializer leaves
    http_port, grpc_port = _free_port(), _free_port()
    log = (tmp / "stderr").open("w+")
    proc = subprocess.Popen(_command(models, http_port, grpc_port), stderr=log, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # what the kubelet does: poll the readiness probe
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"the container exited {proc.returncode}: {log.read()}")
        try:
            if _get(url + "/v2/health/ready")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the container never became ready")
    yield {"proc": proc, "url": url, "grpc": f"127.0.0.1:{grpc_port}", "models": models, "log": log}
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    log.close()


def test_probes_and_rest_infer(container):
    url = container["url"]
    assert _get(url + "/v2/health/live") == (200, {"live": True})
    assert _get(url + "/v2/health/ready") == (200, {"ready": True})
    status, meta = _get(f"{url}/v2/models/{NAME}")
    assert status == 200 and meta["name"] == NAME and meta["versions"] == ["1"]
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [4, 6], "data": x.ravel().tolist()}]}
    req = urllib.request.Request(f"{url}/v2/models/{NAME}/infer", json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        out = {o["name"]: o for o in json.loads(r.read())["outputs"]}
    want = reference(container["models"], x)
    np.testing.assert_allclose(
        np.reshape(out["probabilities"]["data"], (4, -1)), want["probabilities"], atol=1e-6
    )
    assert out["label"]["data"] == want["label"].tolist()


def test_grpc_infer(container):
    client = tg.InferenceServerClient(container["grpc"])
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
        x = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
        inp = tg.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = client.infer(NAME, [inp])
        want = reference(container["models"], x)
        np.testing.assert_allclose(res.as_numpy("probabilities"), want["probabilities"], atol=1e-6)
    finally:
        client.close()


def test_sigterm_drains_the_request_in_flight_then_exits_0(container):
    """Kubernetes stops a pod with SIGTERM: a request already begun is answered, then the server exits."""
    proc, x = container["proc"], np.ones((2, 6), dtype=np.float32)
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 6], "data": x.ravel().tolist()}]}
    ).encode()
    conn = http.client.HTTPConnection(container["url"].removeprefix("http://"), timeout=30)
    conn.putrequest("POST", f"/v2/models/{NAME}/infer")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    conn.send(body[:10])  # in flight: headers read, body still coming
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None  # still draining
    conn.send(body[10:])
    res = conn.getresponse()
    assert res.status == 200, res.read()
    assert len(json.loads(res.read())["outputs"][1]["data"]) == 2
    conn.close()
    assert proc.wait(timeout=30) == 0
    container["log"].seek(0)
    assert "Traceback" not in container["log"].read()


def test_bad_model_dirs_are_refused_at_start_in_one_line(tmp_path: Path):
    good = make_model_dir(tmp_path / "good")
    empty = tmp_path / "empty"
    empty.mkdir()
    changed = Path(shutil.copytree(good, tmp_path / "changed"))
    with (changed / "model.safetensors").open("ab") as f:
        f.write(b"\0")
    for flags, message in [
        (["--model-dir", str(empty)], f"{empty} is not a model directory (no model.json)"),
        (["--model-dir", str(tmp_path / "nope")], f"model directory not found: {tmp_path / 'nope'}"),
        (["--model-dir", str(changed)], "sha256 mismatch"),
        (["--model-dir", str(good), "--registry", str(tmp_path)], "--model-dir and --registry"),
        (["--model-dir", str(good), "--models", "iris"], "--model-dir and --models"),
        (["--model-name", "iris"], "--model-name needs --model-dir"),
    ]:
        out = run_cli("serve", "--http-port", "0", *flags, timeout=60)
        assert out.returncode == 2 and out.stderr.startswith("error: "), (flags, out.stderr)
        assert message in out.stderr and len(out.stderr.splitlines()) == 1, (flags, out.stderr)
