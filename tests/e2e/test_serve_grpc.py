"""The Open Inference Protocol over gRPC (``--grpc-port``), served by the same process as REST and
driven by the unmodified ``tritonclient.grpc``: health, metadata, infer equal to REST and to the
model in process, the repository calls, and each kind of bad request as its gRPC status code, with
the server still answering after every one."""

from __future__ import annotations

import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from bigmodel.registry import Registry
from bigmodel.serve.launch import ServerProcess
from tests.conftest import run_cli
from tests.e2e.test_serve import reference
from tests.models import make_model_dir

KEY = "grpc-key"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("serve-grpc")
    reg = Registry(tmp / "registry")
    dirs = {
        "iris": make_model_dir(tmp / "iris", seed=1),
        "house": make_model_dir(tmp / "house", features=4, task="regression"),
    }
    for name, d in dirs.items():
        reg.register(d, name)
    r = run_cli(
        "compress", "quantize", "minilm", "--method", "fp32", "--out", str(tmp / "minilm"), "--runs", "1"
    )
    assert r.returncode == 0, r.stderr
    reg.register(tmp / "minilm", "minilm")
    args = ["--registry", str(reg.location), "--models", "iris,house,minilm", "--api-key", KEY]
    args += ["--grpc-port", "0"]
    args += ["--max-body-mb", "0.0625", "--access-log", "off"]
    with ServerProcess(args) as server:
        assert server.info["grpc_url"].startswith("127.0.0.1:")
        assert f"gRPC {server.info['grpc_url']}" in server.log()  # the ready line names it
        client = tg.InferenceServerClient(server.info["grpc_url"])
        yield {"server": server, "client": client, "dirs": dirs, "reg": reg}
        client.close()
        assert server.stop() == 0, server.log()[-2000:]  # SIGINT: a clean shutdown, gRPC included


def _input(x: np.ndarray, name: str = "input", datatype: str = "FP32") -> tg.InferInput:
    inp = tg.InferInput(name, list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    return inp


def _code(err: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(err.value.status())


def test_health_and_metadata(world):
    c = world["client"]
    assert c.is_server_live() and c.is_server_ready()  # probes need no key
    assert c.is_model_ready("iris", headers=AUTH) and not c.is_model_ready("nope", headers=AUTH)
    meta = c.get_server_metadata(headers=AUTH, as_json=True)
    assert meta["name"] == "bigmodel" and "binary_tensor_data" in meta["extensions"]
    m = c.get_model_metadata("iris", headers=AUTH, as_json=True)
    assert m["name"] == "iris" and m["versions"] == ["1"] and m["platform"] == "pytorch"
    assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "6"]}]
    assert [o["name"] for o in m["outputs"]] == ["probabilities", "label"]
    index = c.get_model_repository_index(headers=AUTH, as_json=True)["models"]
    assert {(r["name"], r["state"]) for r in index} == {
        ("iris", "READY"),
        ("house", "READY"),
        ("minilm", "READY"),
    }


def test_infer_equals_rest_and_the_model(world):
    c = world["client"]
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    r = c.infer("iris", [_input(x)], headers=AUTH, request_id="r1")
    ref = reference(world["dirs"]["iris"], x)
    np.testing.assert_allclose(r.as_numpy("probabilities"), ref["probabilities"], rtol=1e-5, atol=1e-6)
    assert r.as_numpy("label").astype(str).tolist() == ref["label"].tolist()
    assert r.get_response().id == "r1" and r.get_response().model_version == "1"
    rest = th.InferenceServerClient(world["server"].url.removeprefix("http://"))
    inp = th.InferInput("input", [5, 6], "FP32")
    inp.set_data_from_numpy(x)
    rr = rest.infer("iris", [inp], headers={"Authorization": f"Bearer {KEY}"})
    np.testing.assert_array_equal(r.as_numpy("probabilities"), rr.as_numpy("probabilities"))
    # typed contents instead of raw bytes, one output asked for, a pinned version
    req = tg.InferInput("input", [2, 4], "FP32")
    h = np.arange(8, dtype=np.float32).reshape(2, 4)
    req._get_tensor().contents.fp32_contents.extend(h.ravel().tolist())
    out = c.infer(
        "house", [req], outputs=[tg.InferRequestedOutput("prediction")], model_version="1", headers=AUTH
    )
    np.testing.assert_allclose(
        out.as_numpy("prediction"), reference(world["dirs"]["house"], h)["prediction"], rtol=1e-5
    )


def test_sentences_equal_rest(world):
    c = world["client"]
    texts = np.array(["A man is eating food.", "Zürich liegt am Zürichsee; 東京 too."], dtype=object)
    r = c.infer("minilm", [_input(texts, name="text", datatype="BYTES")], headers=AUTH)
    rest = th.InferenceServerClient(world["server"].url.removeprefix("http://"))
    inp = th.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(texts)
    rr = rest.infer("minilm", [inp], headers={"Authorization": f"Bearer {KEY}"})
    emb = r.as_numpy("embedding")
    assert emb.shape == (2, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(emb, rr.as_numpy("embedding"), atol=1e-6)
    typed = tg.InferInput("text", [2], "BYTES")
    typed._get_tensor().contents.bytes_contents.extend(t.encode() for t in texts)
    np.testing.assert_allclose(c.infer("minilm", [typed], headers=AUTH).as_numpy("embedding"), emb, atol=1e-6)
    with pytest.raises(InferenceServerException) as err:  # an empty sentence: REST's check, gRPC's code
        c.infer("minilm", [_input(np.array([""], dtype=object), name="text", datatype="BYTES")], headers=AUTH)
    assert _code(err) == "StatusCode.INVALID_ARGUMENT" and "empty string" in err.value.message()


def test_bad_requests_are_status_codes(world):
    c = world["client"]
    x = np.ones((2, 6), np.float32)
    cases = [
        (
            lambda: c.infer("iris", [_input(x.astype(np.float64), datatype="FP64")], headers=AUTH),
            "INVALID_ARGUMENT",
            "datatype",
        ),
        (
            lambda: c.infer("iris", [_input(x, name="wrong")], headers=AUTH),
            "INVALID_ARGUMENT",
            "unknown input",
        ),
        (lambda: c.infer("nope", [_input(x)], headers=AUTH), "NOT_FOUND", "unknown model"),
        (
            lambda: c.infer("iris", [_input(x)], model_version="9", headers=AUTH),
            "NOT_FOUND",
            "no version '9'",
        ),
        (lambda: c.get_model_metadata("nope", headers=AUTH), "NOT_FOUND", "unknown model"),
        (lambda: c.infer("iris", [_input(x)]), "UNAUTHENTICATED", "API key"),
        (
            lambda: c.infer("iris", [_input(x)], headers={"authorization": "Bearer nope"}),
            "UNAUTHENTICATED",
            "API key",
        ),
        (
            lambda: c.infer("iris", [_input(np.ones((4000, 6), np.float32))], headers=AUTH),
            "RESOURCE_EXHAUSTED",
            "",
        ),
    ]
    both = _input(x)  # raw bytes, and typed contents as well
    both._get_tensor().contents.fp32_contents.extend(x.ravel().tolist())
    cases.append((lambda: c.infer("iris", [both], headers=AUTH), "INVALID_ARGUMENT", "send one of them"))
    twice = [tg.InferRequestedOutput("label"), tg.InferRequestedOutput("label")]
    cases.append(
        (
            lambda: c.infer("iris", [_input(x)], outputs=twice, headers=AUTH),
            "INVALID_ARGUMENT",
            "asked for twice",
        )
    )
    # a shape that disagrees with the raw bytes it comes with
    lying = _input(x)
    lying._get_tensor().shape[:] = [3, 6]
    cases.append((lambda: c.infer("iris", [lying], headers=AUTH), "INVALID_ARGUMENT", "needs 72"))
    for call, code, words in cases:
        with pytest.raises(InferenceServerException) as err:
            call()
        assert _code(err) == f"StatusCode.{code}", (code, err.value)
        assert words in err.value.message()
        assert c.infer("iris", [_input(x)], headers=AUTH).as_numpy("label").shape == (2,)  # still up
    # counted with REST's requests, by the HTTP status each code stands for
    req = urllib.request.Request(world["server"].url + "/metrics", headers={"Authorization": f"Bearer {KEY}"})
    text = urllib.request.urlopen(req).read().decode()
    assert 'bigmodel_inference_requests_total{model="iris",status="400",version="1"} 5.0' in text
    assert 'bigmodel_inference_requests_total{model="_unknown",status="404",version=""} 1.0' in text


def test_repository_unload_and_load(world):
    """RepositoryModelUnload/Load through the unmodified client, the same code path as REST's
    repository extension: an unloaded model is listed UNAVAILABLE and refuses inference."""
    c = world["client"]
    x = np.ones((1, 4), np.float32)
    c.unload_model("house", headers=AUTH)
    index = c.get_model_repository_index(headers=AUTH, as_json=True)["models"]
    assert {r["name"]: r["state"] for r in index}["house"] == "UNAVAILABLE"
    assert not c.is_model_ready("house", headers=AUTH)
    with pytest.raises(InferenceServerException) as err:
        c.infer("house", [_input(x)], headers=AUTH)
    assert _code(err) in ("StatusCode.NOT_FOUND", "StatusCode.UNAVAILABLE"), err.value
    c.load_model("house", headers=AUTH)
    assert c.is_model_ready("house", headers=AUTH)
    assert c.infer("house", [_input(x)], headers=AUTH).as_numpy("prediction").shape[0] == 1
    for call, code in [
        (lambda: c.load_model("nope", headers=AUTH), "NOT_FOUND"),
        (lambda: c.unload_model("nope", headers=AUTH), "NOT_FOUND"),
        (lambda: c.unload_model("house"), "UNAUTHENTICATED"),
        (lambda: c.load_model("house", headers={"authorization": "Bearer nope"}), "UNAUTHENTICATED"),
    ]:
        with pytest.raises(InferenceServerException) as err:
            call()
        assert _code(err) == f"StatusCode.{code}", (code, err.value)
    assert c.is_model_ready("house", headers=AUTH)  # a refused unload left it loaded


def test_overload_is_unavailable(tmp_path):
    reg = Registry(tmp_path / "registry")
    reg.register(make_model_dir(tmp_path / "iris"), "iris")
    # one queued request at most, which waits 1.5 s for company: the next one overflows at once
    args = ["--registry", str(reg.location), "--grpc-port", "0", "--access-log", "off"]
    args += ["--max-queue", "1", "--max-queue-delay-ms", "1500"]
    with ServerProcess(args) as server:
        c = tg.InferenceServerClient(server.info["grpc_url"])
        x = np.ones((1, 6), np.float32)
        first: list[object] = []
        t = threading.Thread(target=lambda: first.append(c.infer("iris", [_input(x)])))
        t.start()
        time.sleep(0.5)
        with pytest.raises(InferenceServerException) as err:
            c.infer("iris", [_input(x)])
        assert _code(err) == "StatusCode.UNAVAILABLE" and "overloaded" in err.value.message()
        t.join()
        assert len(first) == 1  # the queued request was answered
        assert c.is_server_ready()
        # a raw channel, unknown method: UNIMPLEMENTED, not a crash
        with grpc.insecure_channel(server.info["grpc_url"]) as ch:
            with pytest.raises(grpc.RpcError) as rpc:
                ch.unary_unary("/inference.GRPCInferenceService/ModelConfig")(b"")
            assert rpc.value.code() == grpc.StatusCode.UNIMPLEMENTED
            # bytes that are no ModelInferRequest: INVALID_ARGUMENT naming it, not UNKNOWN
            with pytest.raises(grpc.RpcError) as rpc:
                ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")(b"\xff\xfe\x00garbage")
            assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "malformed ModelInfer request" in str(rpc.value.details())
        c.close()
        assert server.stop() == 0, server.log()[-2000:]
