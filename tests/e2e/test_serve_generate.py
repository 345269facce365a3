"""Language models on the real server: OIP generate and generate_stream, the unmodified openai
client on /v1, continuous batching's limits, disconnects, metrics and bad input."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from typing import Any

import openai
import pytest

from bigmodel.generation import GenerationParams, generate, load_language_model
from bigmodel.registry import Registry
from bigmodel.serve.launch import ServerProcess
from tests.models import make_lm_dir, make_model_dir

KEY = "gen-key"
H = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("generate")
    reg = Registry(tmp / "registry")
    lm = make_lm_dir(tmp / "lm", context=64)
    reg.register(lm, "lm")
    # a long context, so one sequence runs long enough to be cut off or to hold its slot
    reg.register(make_lm_dir(tmp / "long", size="mini", context=4096, seed=1), "long")
    reg.register(make_model_dir(tmp / "iris"), "iris")
    args = ["--registry", str(reg.location), "--api-key", KEY, "--max-sequences", "2", "--max-queue", "1"]
    with ServerProcess([*args, "--access-log", "off"]) as server:
        yield {"url": server.url, "lm": load_language_model(lm), "server": server}
        assert server.stop() == 0


def post(world: dict[str, Any], path: str, body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(world["url"] + path, data=data, headers=H, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), {k.lower(): v for k, v in err.headers.items()}


def sse(world: dict[str, Any], path: str, body: dict[str, Any]) -> list[Any]:
    req = urllib.request.Request(
        world["url"] + path, data=json.dumps(body).encode(), headers=H, method="POST"
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        lines = [ln.decode() for ln in r.read().splitlines() if ln.strip()]
    return [
        ln.removeprefix("data: ") if ln == "data: [DONE]" else json.loads(ln.removeprefix("data: "))
        for ln in lines
    ]


def in_process(world: dict[str, Any], prompt: str, **params: Any) -> str:
    return generate(world["lm"], prompt, GenerationParams(**params)).text


def test_oip_generate_and_stream_equal_generation_in_process(world):
    want = in_process(world, "def main(", max_tokens=40, temperature=0)
    status, body, _ = post(
        world,
        "/v2/models/lm/generate",
        {"text_input": "def main(", "parameters": {"max_tokens": 40, "temperature": 0}},
    )
    assert status == 200, body
    assert body["text_output"] == want and body["model_name"] == "lm" and body["model_version"] == "1"
    assert body["details"] == {"finish_reason": "length", "prompt_tokens": 9, "completion_tokens": 40}
    events = sse(
        world,
        "/v2/models/lm/versions/1/generate_stream",
        {"text_input": "def main(", "parameters": {"max_tokens": 40, "temperature": 0}},
    )
    assert "".join(e["text_output"] for e in events) == want
    assert events[-1]["finish_reason"] == "length" and all("finish_reason" not in e for e in events[:-1])
    # sampling with a seed is reproducible across requests
    p = {"text_input": "x", "parameters": {"max_tokens": 30, "seed": 5, "top_p": 0.9}}
    assert (
        post(world, "/v2/models/lm/generate", p)[1]["text_output"]
        == post(world, "/v2/models/lm/generate", p)[1]["text_output"]
    )


def test_stop_strings_cut_the_answer(world):
    full = in_process(world, "abc", max_tokens=30, temperature=0)
    stop = full[6:9]
    status, body, _ = post(
        world,
        "/v2/models/lm/generate",
        {"text_input": "abc", "parameters": {"max_tokens": 30, "temperature": 0, "stop": [stop]}},
    )
    assert status == 200 and body["text_output"] == full[: full.index(stop)]
    assert body["details"]["finish_reason"] == "stop"


def test_the_unmodified_openai_client(world):
    client = openai.OpenAI(base_url=world["url"] + "/v1", api_key=KEY)
    want = in_process(world, "import ", max_tokens=25, temperature=0)
    done = client.completions.create(model="lm", prompt="import ", max_tokens=25, temperature=0)
    assert done.choices[0].text == want and done.choices[0].finish_reason == "length"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (7, 25, 32)
    chunks = list(
        client.completions.create(
            model="lm:1",
            prompt="import ",
            max_tokens=25,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 25
    assert {m.id for m in client.models.list()} == {"lm", "long", "iris"}
    with pytest.raises(openai.BadRequestError, match="iris"):
        client.completions.create(model="iris", prompt="x", max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=world["url"] + "/v1", api_key="wrong").completions.create(
            model="lm", prompt="x"
        )
    # the OpenAI default: 16 tokens
    assert client.completions.create(model="lm", prompt="x").usage.completion_tokens == 16  # type: ignore[union-attr]


def test_bad_input_is_a_400_naming_it_and_other_streams_go_on(world):
    running = threading.Thread(
        target=lambda: world.setdefault(
            "long_events",
            sse(
                world,
                "/v2/models/long/generate_stream",
                {"text_input": "go", "parameters": {"max_tokens": 2000, "temperature": 0}},
            ),
        )
    )
    running.start()
    bad: list[tuple[Any, str]] = [
        ({"text_input": ""}, "empty"),
        (b'{"text_input": "\xff\xfe"}', "UTF-8"),
        ({"text_input": "\ud800"}, "surrogate"),
        ({"text_input": "a", "parameters": {"max_tokens": 0}}, "max_tokens"),
        ({"text_input": "a", "parameters": {"max_tokens": 10**9}}, "max_tokens"),
        ({"text_input": "a", "parameters": {"temperature": -0.5}}, "temperature"),
        ({"text_input": "a", "parameters": {"top_p": 0}}, "top_p"),
        ({"text_input": "a", "parameters": {"top_p": 1.01}}, "top_p"),
        ({"text_input": "a", "parameters": {"beam_width": 4}}, "beam_width"),
        ({"text_input": "a", "parameters": {"stop": ["x"] * 1000}}, "stop"),
        ({"text_input": "a" * 10_000_000}, "context"),
        ({"text_input": 5}, "text_input"),
        ({"prompt": "a"}, "prompt"),
        ({"text_input": "a", "parameters": "hot"}, "parameters"),
    ]
    for body, word in bad:
        for route in ("generate", "generate_stream"):
            status, answer, _ = post(world, f"/v2/models/lm/{route}", body)
            assert status == 400 and word in answer["error"], (
                body if isinstance(body, bytes) else str(body)[:80],
                answer,
            )
    status, answer, _ = post(world, "/v1/completions", {"model": "lm", "prompt": "a", "n": 2})
    assert status == 400 and "'n'" in answer["error"]["message"]
    status, answer, _ = post(world, "/v2/models/iris/generate", {"text_input": "a"})
    assert status == 400 and "language model" in answer["error"]
    running.join(60)
    events = world["long_events"]
    assert events[-1]["finish_reason"] == "length" and events[-1]["details"]["completion_tokens"] == 2000


def metric(world: dict[str, Any], name: str, **labels: str) -> float:
    """The value of ``name`` whose labels include ``labels`` (0 when absent)."""
    req = urllib.request.Request(world["url"] + "/metrics", headers=H)
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        inside = line[len(name) + 1 : line.rindex("}")]
        have = dict(part.split("=", 1) for part in inside.split(","))
        if all(have.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_client_that_disconnects_frees_its_slot_at_once(world):
    before = metric(world, "bigmodel_generation_tokens_total", model="long")
    conn = http.client.HTTPConnection(world["url"].removeprefix("http://"), timeout=30)
    body = json.dumps({"text_input": "go", "parameters": {"max_tokens": 4000, "temperature": 0}})
    conn.request("POST", "/v2/models/long/generate_stream", body, H)
    resp = conn.getresponse()
    assert resp.status == 200
    resp.fp.readline()  # the first event arrived: it is running
    conn.sock.close()  # type: ignore[union-attr]
    conn.close()
    deadline = time.time() + 20
    while metric(world, "bigmodel_generation_sequences", model="long", state="running") > 0:
        assert time.time() < deadline, "the slot was never freed"
        time.sleep(0.05)
    generated = metric(world, "bigmodel_generation_tokens_total", model="long") - before
    assert 0 < generated < 4000  # stopped early, not run to the end for nobody


def test_past_the_sequences_and_the_queue_it_is_503_with_retry_after(world):
    results: list[Any] = []

    def hold() -> None:
        results.append(
            post(
                world,
                "/v2/models/long/generate",
                {"text_input": "z", "parameters": {"max_tokens": 3000, "temperature": 0}},
            )
        )

    holders = [threading.Thread(target=hold) for _ in range(3)]  # 2 run (--max-sequences 2), 1 waits
    for t in holders:
        t.start()
    deadline = time.time() + 20
    while metric(world, "bigmodel_generation_sequences", model="long", state="waiting") < 1:
        assert time.time() < deadline
        time.sleep(0.02)
    status, answer, headers = post(world, "/v2/models/long/generate", {"text_input": "z"})
    assert status == 503 and "overloaded" in answer["error"] and headers.get("retry-after") == "1"
    for t in holders:
        t.join(120)
    assert [r[0] for r in results] == [200, 200, 200], results


def test_generation_metrics(world):
    # generate, stream and completions count as requests of their model, by status, as infer does
    assert metric(world, "bigmodel_inference_requests_total", model="lm", status="200") > 5
    assert metric(world, "bigmodel_inference_requests_total", model="lm", status="400") > 5
    assert metric(world, "bigmodel_generation_time_to_first_token_seconds_count", model="lm") > 0
    assert metric(world, "bigmodel_generation_inter_token_latency_seconds_count", model="lm") > 0
    assert metric(world, "bigmodel_generation_tokens_total", model="lm") > 0


def test_a_tiny_temperature_is_near_greedy_and_harms_no_other_sequence(world):
    results: list[Any] = []
    other = threading.Thread(
        target=lambda: results.append(
            post(world, "/v2/models/long/generate", {"text_input": "o", "parameters": {"max_tokens": 300}})
        )
    )
    other.start()
    time.sleep(0.2)
    greedy = in_process(world, "a", max_tokens=20, temperature=0)
    for t in (1e-300, 5e-324, 1e-45):
        status, body, _ = post(
            world,
            "/v2/models/lm/generate",
            {"text_input": "a", "parameters": {"max_tokens": 20, "temperature": t}},
        )
        assert status == 200 and body["text_output"] == greedy, (t, body)
    other.join(60)
    assert results[0][0] == 200 and results[0][1]["details"]["completion_tokens"] == 300
    status, body, _ = post(world, "/v1/completions", {"model": "lm", "prompt": "a", "stream_options": {}})
    assert status == 400 and "stream_options" in body["error"]["message"]


def test_a_client_that_leaves_a_non_streamed_request_frees_its_slot(world):
    before = metric(world, "bigmodel_generation_tokens_total", model="long")
    for path, body in (
        ("/v2/models/long/generate", {"text_input": "go", "parameters": {"max_tokens": 4000}}),
        ("/v1/completions", {"model": "long", "prompt": "go", "max_tokens": 4000}),
    ):
        conn = http.client.HTTPConnection(world["url"].removeprefix("http://"), timeout=30)
        conn.request("POST", path, json.dumps(body), H)
        deadline = time.time() + 20
        while metric(world, "bigmodel_generation_sequences", model="long", state="running") < 1:
            assert time.time() < deadline
            time.sleep(0.02)
        conn.sock.close()  # type: ignore[union-attr]
        conn.close()
        while metric(world, "bigmodel_generation_sequences", model="long", state="running") > 0:
            assert time.time() < deadline, "the slot was never freed"
            time.sleep(0.05)
    assert metric(world, "bigmodel_generation_tokens_total", model="long") - before < 8000
