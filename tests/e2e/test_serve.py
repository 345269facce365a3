"""The real server process on a free localhost port, driven by the real tritonclient (binary and
JSON tensors), the aiohttp-based tritonclient for concurrency, and the `bigmodel predict` CLI."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.http as th
import tritonclient.http.aio as tha
from tritonclient.utils import InferenceServerException

from bigmodel import artifacts, tasks
from bigmodel.registry import Registry
from bigmodel.serve.launch import ServerProcess
from tests.conftest import run_cli
from tests.models import make_model_dir

KEY = "s3cret-key"


def auth() -> dict[str, str]:
    # a fresh dict per call: tritonclient writes Inference-Header-Content-Length into the one it is given
    return {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("serve")
    reg = Registry(tmp / "registry")
    dirs = {
        "iris:1": make_model_dir(tmp / "iris1", seed=1),
        "iris:2": make_model_dir(tmp / "iris2", seed=2, onnx=True),
        "house:1": make_model_dir(tmp / "house", features=4, task="regression"),
        "bin:1": make_model_dir(tmp / "bin", features=3, task="binary", labels=[0, 1], seed=4),
        "sw:1": make_model_dir(tmp / "sw1", seed=5),
        "sw:2": make_model_dir(tmp / "sw2", seed=6),
    }
    for ref, d in dirs.items():
        reg.register(d, ref.split(":")[0])
    reg.alias("iris", 1, "production")
    reg.alias("sw", 1, "production")
    log = tmp / "access.log"
    args = ["--registry", str(reg.location), "--models", "iris,iris:2,house,bin,sw", "--api-key", KEY]
    args += ["--poll-interval-s", "0.2", "--max-queue-delay-ms", "2", "--access-log", str(log)]
    with ServerProcess(args, env={"BIGMODEL_HOME": str(tmp / "home")}) as server:
        yield {
            "url": server.url,
            "host": server.url.removeprefix("http://"),
            "reg": reg,
            "dirs": dirs,
            "log": log,
            "tmp": tmp,
        }
        assert server.stop() == 0  # SIGINT: a clean shutdown


def reference(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The model in this process, without any serving code."""
    m = artifacts.load_model(path)
    with torch.no_grad():
        out = tasks.postprocess(m.spec, m.module(torch.from_numpy(x)))
    if m.spec.task == "regression":
        return {"prediction": out["predictions"].numpy()}
    return {
        "probabilities": out["probabilities"].numpy(),
        "label": np.array(tasks.labels_of(m.spec, out["label_codes"])),
    }


def _input(x: np.ndarray, binary: bool = True) -> th.InferInput:
    i = th.InferInput("input", list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    return i


def _rows(n: int, features: int = 6, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, features)) * 2 + np.arange(features)).astype(
        np.float32
    )


def test_health_metadata_and_api_key(world):
    c = th.InferenceServerClient(world["host"])
    assert c.is_server_live() and c.is_server_ready()  # health needs no key
    for call in (
        c.get_server_metadata,
        lambda: c.get_model_metadata("iris"),
        lambda: c.infer("iris", [_input(_rows(1))]),
    ):
        with pytest.raises(InferenceServerException, match="missing or wrong API key") as info:
            call()
        assert info.value.status() == "401"
    with pytest.raises(InferenceServerException, match="API key"):
        c.get_server_metadata(headers={"Authorization": "Bearer wrong"})
    meta = c.get_server_metadata(headers=auth())
    assert meta["name"] == "bigmodel" and "binary_tensor_data" in meta["extensions"]
    m = c.get_model_metadata("iris", headers=auth())
    assert m["versions"] == ["1", "2"] and m["platform"] == "pytorch"
    assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 6]}]
    assert [o["name"] for o in m["outputs"]] == ["probabilities", "label"]
    assert m["parameters"]["version"] == "1" and m["parameters"]["features"] == [f"f{i}" for i in range(6)]
    assert c.get_model_metadata("iris", "2", headers=auth())["platform"] == "onnxruntime_onnx"
    assert c.is_model_ready("iris", headers=auth()) and c.is_model_ready("iris", "2", headers=auth())
    assert not c.is_model_ready("iris", "7", headers=auth()) and not c.is_model_ready("nope", headers=auth())


@pytest.mark.parametrize("binary", [True, False])
def test_infer_equals_the_model_in_process(world, binary: bool):
    c = th.InferenceServerClient(world["host"])
    outs = lambda *names: [th.InferRequestedOutput(n, binary_data=binary) for n in names]  # noqa: E731
    x = _rows(5, seed=1)
    for version, ref in (("", "iris:1"), ("1", "iris:1"), ("2", "iris:2")):  # "" -> production (1)
        r = c.infer(
            "iris",
            [_input(x, binary)],
            version,
            outputs=outs("probabilities", "label"),
            headers=auth(),
            request_id="q7",
        )
        want = reference(world["dirs"][ref], x)
        assert r.get_response()["model_version"] == ref[-1] and r.get_response()["id"] == "q7"
        np.testing.assert_allclose(r.as_numpy("probabilities"), want["probabilities"], atol=1e-5)
        got_labels = [v.decode() if isinstance(v, bytes) else v for v in r.as_numpy("label").tolist()]
        assert got_labels == want["label"].tolist()
    xh = _rows(3, 4, seed=2)
    r = c.infer("house", [_input(xh, binary)], outputs=outs("prediction"), headers=auth())
    np.testing.assert_allclose(
        r.as_numpy("prediction"), reference(world["dirs"]["house:1"], xh)["prediction"], rtol=1e-5
    )
    xb = _rows(4, 3, seed=3)
    r = c.infer("bin", [_input(xb, binary)], headers=auth())  # no outputs named: all, as binary data
    assert r.as_numpy("label").dtype == np.int64
    assert r.as_numpy("label").tolist() == reference(world["dirs"]["bin:1"], xb)["label"].tolist()
    assert r.as_numpy("probabilities").shape == (4, 2)


def _post(world, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    req = urllib.request.Request(
        world["url"] + path, data=body, headers={**auth(), **(headers or {})}, method="POST"
    )
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def test_bad_input_is_a_4xx_naming_the_problem_and_the_server_lives_on(world):
    c = th.InferenceServerClient(world["host"])
    x = _rows(2)
    cases = [
        (
            lambda: c.infer("iris", [_input(_rows(2, 5))], headers=auth()),
            "400",
            r"shape \[2, 5\]; model iris takes \[-1, 6\]",
        ),
        (lambda: c.infer("nope", [_input(x)], headers=auth()), "404", "unknown model 'nope'"),
        (lambda: c.infer("iris", [_input(x)], "9", headers=auth()), "404", "has no version '9' loaded"),
        (
            lambda: c.infer("iris", [_input(np.full((1, 6), np.inf, np.float32))], headers=auth()),
            "400",
            "not finite FP32 numbers",
        ),
        (
            lambda: c.infer("iris", [_input(x)], outputs=[th.InferRequestedOutput("logits")], headers=auth()),
            "400",
            "unknown output 'logits'",
        ),
    ]
    wrong_type = th.InferInput("input", [2, 6], "FP64")
    wrong_type.set_data_from_numpy(x.astype(np.float64))
    cases.append(
        (
            lambda: c.infer("iris", [wrong_type], headers=auth()),
            "400",
            "datatype 'FP64'; model iris takes FP32",
        )
    )
    wrong_name = th.InferInput("features", [2, 6], "FP32")
    wrong_name.set_data_from_numpy(x)
    cases.append((lambda: c.infer("iris", [wrong_name], headers=auth()), "400", "unknown input 'features'"))
    for call, status, message in cases:
        with pytest.raises(InferenceServerException, match=message) as info:
            call()
        assert info.value.status() == status
    status, body, _ = _post(world, "/v2/models/iris/infer", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]
    # a body over the limit is refused from its Content-Length, before it is read
    conn = http.client.HTTPConnection(world["host"])
    conn.putrequest("POST", "/v2/models/iris/infer")
    conn.putheader("Authorization", f"Bearer {KEY}")
    conn.putheader("Content-Length", str(17 * 2**20))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and "larger than the limit" in json.loads(resp.read())["error"]
    conn.close()
    status, body, _ = _post(world, "/v2/models/iris/infer", b"\x00junk", {"Content-Encoding": "gzip"})
    assert status == 400 and "cannot decompress" in body["error"]
    status, body, _ = _post(world, "/v2/models/iris/infer", b"{}", {"Inference-Header-Content-Length": "abc"})
    assert status == 400 and "must be an integer" in body["error"]
    status, body, _ = _post(world, "/v2/nowhere", b"{}")
    assert status == 404 and "no such endpoint" in body["error"]
    # gzip-compressed requests (tritonclient's request_compression_algorithm) work
    r = c.infer("iris", [_input(x)], headers=auth(), request_compression_algorithm="gzip")
    np.testing.assert_allclose(
        r.as_numpy("probabilities"), reference(world["dirs"]["iris:1"], x)["probabilities"], atol=1e-5
    )
    assert c.is_server_live()


def test_many_concurrent_clients_each_get_their_own_rows(world):
    x_of = {i: _rows(1 + i % 3, seed=100 + i) for i in range(48)}

    async def client(i: int, aio: tha.InferenceServerClient) -> list[np.ndarray]:
        got = []
        for _ in range(6):
            r = await aio.infer("iris", [_input(x_of[i], binary=i % 2 == 0)], headers=auth())
            got.append(r.as_numpy("probabilities"))
        return got

    async def main() -> list[list[np.ndarray]]:
        aio = tha.InferenceServerClient(world["host"], conn_limit=64)
        try:
            return await asyncio.gather(*(client(i, aio) for i in range(48)))
        finally:
            await aio.close()

    results = asyncio.run(main())
    for i, got in enumerate(results):
        want = reference(world["dirs"]["iris:1"], x_of[i])["probabilities"]
        for probs in got:
            np.testing.assert_allclose(probs, want, atol=1e-5)
    text = (
        urllib.request.urlopen(urllib.request.Request(world["url"] + "/metrics", headers=auth()))
        .read()
        .decode()
    )
    batches = {
        line.split("le=")[1].split(",")[0].strip('"'): float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("bigmodel_inference_batch_size_bucket") and 'model="iris",version="1"' in line
    }
    assert batches["+Inf"] < 288  # fewer forward passes than requests: requests were merged
    assert 'bigmodel_inference_requests_total{model="iris",status="200",version="1"}' in text
    assert (
        "bigmodel_inference_queue_duration_seconds_bucket" in text and "bigmodel_inference_in_flight" in text
    )


def test_alias_switch_under_load_fails_no_request(world):
    x_of = {i: _rows(2, seed=200 + i) for i in range(12)}
    want = {
        v: {i: reference(world["dirs"][f"sw:{v}"], x)["probabilities"] for i, x in x_of.items()}
        for v in (1, 2)
    }
    seen: dict[int, list[str]] = {i: [] for i in x_of}
    stop = time.monotonic() + 4.0

    async def client(i: int, aio: tha.InferenceServerClient) -> None:
        while time.monotonic() < stop:
            r = await aio.infer("sw", [_input(x_of[i])], headers=auth())
            v = r.get_response()["model_version"]
            np.testing.assert_allclose(r.as_numpy("probabilities"), want[int(v)][i], atol=1e-5)
            seen[i].append(v)

    async def main() -> None:
        aio = tha.InferenceServerClient(world["host"], conn_limit=16)
        try:
            await asyncio.gather(*(client(i, aio) for i in x_of))
        finally:
            await aio.close()

    mover = threading.Timer(1.0, lambda: world["reg"].alias("sw", 2, "production"))
    mover.start()
    asyncio.run(main())  # any failed request raises here
    mover.join()
    for versions in seen.values():
        assert versions[0] == "1" and versions[-1] == "2"
        assert versions == sorted(versions)  # once switched, never back
    c = th.InferenceServerClient(world["host"])
    assert c.get_model_metadata("sw", headers=auth())["versions"] == ["2"]  # version 1 was released


def test_repository_extension(world):
    c = th.InferenceServerClient(world["host"])
    index = c.get_model_repository_index(headers=auth())
    assert {"name": "iris", "version": "2", "state": "READY", "reason": ""} in index
    c.unload_model("bin", headers=auth())
    assert not c.is_model_ready("bin", headers=auth())
    with pytest.raises(InferenceServerException, match="unknown model 'bin'"):
        c.infer("bin", [_input(_rows(1, 3))], headers=auth())
    c.load_model("bin", headers=auth())
    assert c.is_model_ready("bin", headers=auth())
    with pytest.raises(InferenceServerException, match="no model named 'ghost'") as info:
        c.load_model("ghost", headers=auth())
    assert info.value.status() == "404"


def test_access_log_is_structured(world):
    # This test's own requests: a success, a missing key and a malformed body.
    body = {"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32", "data": [0.5] * 6}]}
    assert _post(world, "/v2/models/iris/infer", json.dumps(body).encode())[0] == 200
    assert _post(world, "/v2/models/iris/infer", b"{}", headers={"Authorization": ""})[0] == 401
    assert _post(world, "/v2/models/iris/infer", b"{not json")[0] == 400
    deadline = time.monotonic() + 10  # the log is flushed a few times a second
    while True:
        records = [json.loads(line) for line in world["log"].read_text().splitlines()]
        infer = [r for r in records if r["path"].endswith("/infer") and r["status"] == 200]
        unauthorized = [r for r in records if r["status"] == 401]
        bad = [r for r in records if r["status"] == 400 and "error" in r]
        if (infer and unauthorized and bad) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert infer and {"ts", "method", "path", "status", "model", "version", "rows", "ms", "queue_ms"} <= set(
        infer[0]
    )
    assert unauthorized and bad


def test_predict_cli(world):
    x = _rows(3, seed=9)
    csv = world["tmp"] / "rows.csv"
    csv.write_text(
        "target,"
        + ",".join(f"f{i}" for i in range(6))
        + "\n"
        + "\n".join("z," + ",".join(map(str, r)) for r in x.tolist())
        + "\n"
    )
    base = ["--url", world["url"], "--api-key", KEY, "--json"]
    out = run_cli("predict", "iris:2", "--input", str(csv), *base)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert (
        got["version"] == "2"
        and [p["label"] for p in got["predictions"]]
        == reference(world["dirs"]["iris:2"], x)["label"].tolist()
    )
    rows = world["tmp"] / "rows.json"
    rows.write_text(json.dumps([{f"f{i}": v for i, v in enumerate(r)} for r in x.tolist()]))
    out = run_cli("predict", "iris@production", "--input", str(rows), *base)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["version"] == "1"
    out = run_cli("predict", "iris@staging", "--input", str(rows), *base)
    assert (
        out.returncode == 2 and out.stderr.startswith("error: the server at") and "iris@staging" in out.stderr
    )


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("slow")
    reg = Registry(tmp / "registry")
    reg.register(make_model_dir(tmp / "wide", features=512, hidden=(2048, 2048)), "wide")
    args = [
        "--registry",
        str(reg.location),
        "--max-batch-size",
        "1",
        "--max-queue",
        "2",
        "--access-log",
        "off",
    ]
    with ServerProcess(args, env={"BIGMODEL_HOME": str(tmp / "home")}) as server:
        yield server


def test_backpressure_503_with_retry_after_and_timeouts(slow_server):
    x = _rows(1, 512)
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 512], "data": x.ravel().tolist()}]}
    ).encode()
    statuses: list[int] = []
    retry_after: set[str | None] = set()

    start = threading.Barrier(48)  # all at once: a loaded test machine must not trickle them in

    def one() -> None:
        req = urllib.request.Request(slow_server.url + "/v2/models/wide/infer", data=body, method="POST")
        start.wait()
        try:
            with urllib.request.urlopen(req) as resp:
                statuses.append(resp.status)
        except urllib.error.HTTPError as err:
            statuses.append(err.code)
            assert "overloaded" in json.loads(err.read())["error"]
            retry_after.add(err.headers.get("Retry-After"))

    threads = [threading.Thread(target=one) for _ in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) == {200, 503} and retry_after == {"1"}, statuses
    # a client-set timeout (tritonclient's `timeout`, microseconds) shorter than the queue wait -> 503
    c = th.InferenceServerClient(slow_server.url.removeprefix("http://"))
    results: list[str] = []

    def timed() -> None:
        try:
            c2 = th.InferenceServerClient(slow_server.url.removeprefix("http://"))
            c2.infer("wide", [_input(x)], timeout=1)
            results.append("ok")
        except InferenceServerException as err:
            results.append(str(err))

    threads = [threading.Thread(target=timed) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert any("timed out" in r or "overloaded" in r for r in results), results
    assert c.is_server_live() and c.infer("wide", [_input(x)]).as_numpy("label").shape == (1,)


EXTENSION = """
import json, sys
from starlette.routing import Route
from bigmodel.serve import ServeConfig, serve
from bigmodel.serve.extension import json_response

def feedback(server):  # how a later stage adds its routes: a module with routes(server)
    async def handler(request):
        served = server.models.get(request.path_params["name"])
        body = await server.read_json(request)
        return json_response({"model": served.name, "version": served.version_str, "rows": len(body["rows"])})
    return [Route("/v2/models/{name}/feedback", handler, methods=["POST"])]

cfg = ServeConfig(registry=sys.argv[1], models=["iris"], port=0, api_key="k", access_log="off")
serve(cfg, extensions=[feedback], on_ready=lambda state, url: print(json.dumps({"url": url}), flush=True))
"""


def test_routes_from_another_module_plug_in(world):
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", EXTENSION, str(world["reg"].location)],
        stdout=subprocess.PIPE,
        env={**__import__("os").environ, "BIGMODEL_HOME": str(world["tmp"] / "home")},
    )
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        req = urllib.request.Request(
            url + "/v2/models/iris/feedback", data=b'{"rows": [[1], [2]]}', method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as info:  # the API key guards extensions too
            urllib.request.urlopen(req)
        assert info.value.code == 401
        req.add_header("Authorization", "Bearer k")
        with urllib.request.urlopen(req) as resp:
            assert json.loads(resp.read()) == {"model": "iris", "version": "1", "rows": 2}
    finally:
        proc.send_signal(__import__("signal").SIGINT)
        assert proc.wait(30) == 0


def _get(world, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(world["url"] + path, headers=auth())) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_bad_versions_and_parameters_are_4xx_naming_them(world):
    # '²' passes str.isdigit() but int() refuses it: once a 500 on every versioned path
    row = {f"f{i}": 0.5 for i in range(6)}
    infer = {"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32", "data": [0.5] * 6}]}
    for method, path, body in [
        ("POST", "/v2/models/iris/versions/%C2%B2/infer", infer),
        ("POST", "/v2/models/iris/versions/%C2%B2/explain", {"rows": [row]}),
        ("GET", "/v2/models/iris/versions/%C2%B2", None),
        ("GET", "/v2/models/iris/versions/%C2%B2/ready", None),
    ]:
        if method == "GET":
            status, answer = _get(world, path)
        else:
            status, answer, _ = _post(world, path, json.dumps(body).encode())
        assert status == 404 and "has no version '²' loaded" in answer["error"], (path, answer)
    for verb in ("load", "unload"):
        status, answer, _ = _post(world, f"/v2/repository/models/iris:%C2%B2/{verb}", b"")
        assert status == 400 and "bad model reference 'iris:²'" in answer["error"], answer
    status, answer, _ = _post(
        world, "/v2/models/iris/explain", json.dumps({"rows": [row], "target": "²"}).encode()
    )
    assert status == 400 and "unknown target class '²'" in answer["error"] and "--" not in answer["error"], (
        answer
    )
    # 'parameters' that is not an object: once a 500 (AttributeError) for an output's
    for extra, where in [
        ({"outputs": [{"name": "label", "parameters": 5}]}, "outputs[0].parameters"),
        ({"outputs": [{"name": "label", "parameters": [1]}]}, "outputs[0].parameters"),
        ({"parameters": [1]}, "parameters"),
    ]:
        status, answer, _ = _post(world, "/v2/models/iris/infer", json.dumps({**infer, **extra}).encode())
        assert status == 400 and answer["error"].startswith(f"{where} must be an object"), answer


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory):
    """bc:1 served; bc:2's weights corrupt in the registry's store; bc:3 good; a 10 KiB body limit."""
    tmp = tmp_path_factory.mktemp("strict")
    reg = Registry(tmp / "registry")
    for seed in (1, 2, 3):
        rec = reg.register(make_model_dir(tmp / f"bc{seed}", features=3, seed=seed), "bc")
    bad = reg.show("bc:2")["files"]["model.safetensors"]["sha256"]
    blob = Path(reg.blobs.path(bad))
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x01")
    assert rec["version"] == 3
    args = ["--registry", str(reg.location), "--models", "bc:1", "--poll-interval-s", "0.1"]
    args += ["--max-body-mb", "0.01", "--access-log", "off"]
    with ServerProcess(args, env={"BIGMODEL_HOME": str(tmp / "home")}) as server:
        yield server
        assert server.stop() == 0


def _call(url: str, method: str = "POST", body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_failed_load_leaves_the_model_unavailable_and_the_server_ready(strict_server):
    url = strict_server.url
    status, answer = _call(url + "/v2/repository/models/bc:2/load")
    assert status == 400 and "model.safetensors of bc:2 is corrupt" in answer["error"], answer
    # as in Triton: the error is the answer; the server does not keep waiting for (or retrying) it
    assert _call(url + "/v2/health/ready", "GET") == (200, {"ready": True})
    rows = {r["version"]: r["state"] for r in _call(url + "/v2/repository/index")[1]}
    assert rows == {"1": "READY", "2": "UNAVAILABLE", "3": "UNAVAILABLE"}
    time.sleep(0.5)  # five polls
    assert "bc:2" not in strict_server.log()
    assert _call(url + "/v2/repository/models/bc:2/unload")[0] == 404
    # a good version loads beside it and unloads by the same NAME:VERSION
    assert _call(url + "/v2/repository/models/bc:3/load") == (200, {})
    assert _call(url + "/v2/models/bc", "GET")[1]["versions"] == ["1", "3"]
    assert _call(url + "/v2/repository/models/bc:3/unload") == (200, {})
    assert _call(url + "/v2/models/bc", "GET")[1]["versions"] == ["1"]
    assert _call(url + "/v2/health/ready", "GET")[0] == 200


def test_repository_routes_refuse_bodies_over_the_limit(strict_server):
    big = json.dumps({"ready": True, "pad": "x" * 20_000}).encode()  # over the 10 KiB limit
    for path in (
        "/v2/repository/index",
        "/v2/repository/models/bc:3/load",
        "/v2/repository/models/bc/unload",
    ):
        status, answer = _call(strict_server.url + path, body=big)
        assert status == 413 and "larger than the limit of 10485 bytes" in answer["error"], (path, answer)
        # and without a Content-Length: refused while it streams in
        host = strict_server.url.removeprefix("http://")
        conn = http.client.HTTPConnection(host)
        conn.request("POST", path, body=iter([big[:8000], big[8000:]]), encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 413, path
        conn.close()
    assert _call(strict_server.url + "/v2/models/bc", "GET")[1]["versions"] == ["1"]  # nothing loaded
    assert _call(strict_server.url + "/v2/repository/index", body=b'{"ready": true}')[0] == 200


def test_bad_serve_flags_are_one_line_errors(world, tmp_path: Path):
    reg = str(world["reg"].location)
    (tmp_path / "afile.txt").write_text("")
    for flags, message in [
        (["--access-log", str(tmp_path / "afile.txt" / "log")], "a file is in the way"),
        (["--access-log", str(tmp_path)], f"access log {tmp_path} is a folder"),
        (["--max-body-mb", "-1"], "--max-body-mb: must be at least 0.0009765625 (1 KiB) (got -1)"),
        (["--models", "iris:²"], "bad model reference 'iris:²'"),
    ]:
        out = run_cli("serve", "--registry", reg, "--port", "0", *flags, timeout=60)
        assert out.returncode == 2 and out.stderr.startswith("error: "), (flags, out.stderr)
        assert message in out.stderr and len(out.stderr.splitlines()) == 1, (flags, out.stderr)


def test_bad_version_on_the_command_line_is_a_one_line_error(world, tmp_path: Path):
    csv = tmp_path / "rows.csv"
    csv.write_text(",".join(f"f{i}" for i in range(6)) + "\n" + ",".join(["0.5"] * 6) + "\n")
    reg = ["--registry", str(world["reg"].location)]
    for args, message in [
        (["registry", "show", "iris:²", *reg], "bad model reference 'iris:²'"),
        (["predict", "iris:²", "--input", str(csv), "--url", world["url"]], "bad model reference 'iris:²'"),
        (["explain", "iris:²", "--input", str(csv), *reg], "bad model reference 'iris:²'"),
        (["explain", "iris:1", "--input", str(csv), "--target", "²", *reg], "unknown target class '²'"),
    ]:
        out = run_cli(*args, timeout=120)
        assert out.returncode == 2 and out.stderr.startswith("error: "), (args, out.stderr)
        assert message in out.stderr and len(out.stderr.splitlines()) == 1, (args, out.stderr)
