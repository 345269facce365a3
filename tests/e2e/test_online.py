"""Online learning and the feedback / explain routes as users drive them: the real CLI on a stream
with a concept drift at a known row, and the real server process learning from live feedback."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as th

from bigmodel import artifacts
from bigmodel.explanations import explain_batch
from bigmodel.online_learning.synthetic import drift_rows
from bigmodel.registry import Registry
from bigmodel.serve.launch import ServerProcess
from tests.conftest import BIN, run_cli
from tests.models import fit_model_dir

KEY = "online-key"
DRIFT = 1500  # the labelling function changes at this row of the CLI stream


def _json(out) -> dict:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rows(x: np.ndarray, y: np.ndarray | None = None) -> list[dict[str, Any]]:
    rows = [{f"f{j}": float(v) for j, v in enumerate(r)} for r in x]
    if y is not None:
        for r, label in zip(rows, y.tolist(), strict=True):
            r["label"] = label
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model of the stream's first concept, as a team would have trained and deployed it."""
    x, y = drift_rows(2000, seed=11)
    return fit_model_dir(tmp_path_factory.mktemp("online") / "model", x, y, steps=150)


def _registry(path: Path, model: Path) -> Registry:
    reg = Registry(path)
    reg.register(model, "drift")
    reg.alias("drift", 1, "production")
    return reg


def test_cli_online_detects_the_drift_and_moves_the_alias(tmp_path: Path, trained: Path):
    reg = _registry(tmp_path / "registry", trained)
    x, y = drift_rows(3000, seed=11, start=10**6, drift_at=(10**6 + DRIFT,))
    stream = tmp_path / "stream.csv"
    stream.write_text(
        ",".join([*(f"f{j}" for j in range(8)), "label"])
        + "\n"
        + "".join(",".join(map(str, [*r, int(t)])) + "\n" for r, t in zip(x.tolist(), y, strict=True))
    )
    png = tmp_path / "online.png"
    base = ["--registry", str(reg.location), "--min-samples", "100", "--json"]
    out = _json(run_cli("online", "drift", "--stream", str(stream), "--plot", str(png), *base))
    assert out["rows"] == 3000 and out["started_from"] == 1 and png.stat().st_size > 1000
    drifts = [e["row"] for e in out["events"] if e["event"] == "drift"]
    assert drifts and DRIFT < drifts[0] <= DRIFT + 250, drifts  # detected within a bounded delay
    assert not [r for r in drifts if r <= DRIFT]  # and never before the change
    promoted = [e for e in out["events"] if e["event"] == "promote" and e["row"] > DRIFT]
    assert promoted and out["aliases"]["production"] == out["version"] > 1
    rec = reg.show("drift@production")
    assert rec["method"] == "online" and rec["parent"]["digest"]
    # the new production version answers the new concept; version 1 no longer does
    xt, yt = drift_rows(1000, seed=11, start=2 * 10**6, drift_at=(0,))
    acc = {}
    for ref in ("drift:1", "drift@production"):
        m = artifacts.load_model(reg.resolve(ref))
        acc[ref] = float(((m.module(__import__("torch").from_numpy(xt))[:, 0] > 0).numpy() == yt).mean())
    assert acc["drift@production"] > 0.8 and acc["drift:1"] < 0.7, acc
    assert out["prequential"]["serving"] > 0.75

    # stdin, JSON lines, dry run: decisions are reported, nothing is registered
    lines = "".join(json.dumps(r) + "\n" for r in _rows(x[:600], y[:600]))
    versions = len(reg.versions("drift"))
    dry = subprocess.run(
        [str(BIN / "bigmodel"), "online", "drift", "--stream", "-", "--dry-run", *base],
        input=lines, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert _json(dry)["rows"] == 600 and len(reg.versions("drift")) == versions

    for args, message in (
        (["drift:1", "--stream", str(stream)], "online learning follows an alias"),
        (
            ["drift", "--stream", str(stream), "--window", "50", "--min-samples", "100"],
            "must not exceed window",
        ),
    ):
        bad = run_cli("online", *args, "--registry", str(reg.location))
        assert bad.returncode == 2 and bad.stderr.startswith("error: ") and message in bad.stderr, bad.stderr
    # a bad row after the drift: the run stops on it in one line, and says where the alias was left
    tail = tmp_path / "bad-tail.jsonl"
    rows = _rows(x, y)
    tail.write_text("".join(json.dumps(r) + "\n" for r in [*rows, {**rows[0], "f7": "x"}]))
    fresh = _registry(tmp_path / "registry2", trained)
    bad = run_cli(
        "online",
        "drift",
        "--stream",
        str(tail),
        "--min-samples",
        "100",
        "--registry",
        str(fresh.location),
        "--json",
    )
    moved = fresh.aliases("drift")["production"]
    assert moved > 1  # promoted after the drift, in the chunks before the bad row's (rows 2049..)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"error: {tail}: row 3000 feature 'f7' must be a number, got 'x' (learned from the first 2048 rows, "
        f"which moved drift@production to version {moved})"
    ]
    nolabel = tmp_path / "nolabel.csv"
    nolabel.write_text("f0,f1,f2,f3,f4,f5,f6,f7\n" + "1,2,3,4,5,6,7,8\n")
    bad = run_cli("online", "drift", "--stream", str(nolabel), "--registry", str(reg.location))
    assert bad.returncode == 2 and "missing label column 'label'" in bad.stderr


def _call(url: str, path: str, body: Any = None, *, key: str | None = KEY, method: str = "POST"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trained: Path):
    tmp = tmp_path_factory.mktemp("online-server")
    reg = _registry(tmp / "registry", trained)
    reg.register(trained, "pinned")
    args = ["--registry", str(reg.location), "--models", "drift,pinned:1", "--api-key", KEY]
    args += ["--online", "--online-set", "window=100", "--online-set", "min_samples=50"]
    args += ["--online-set", "check_every=25", "--poll-interval-s", "0.2", "--access-log", "off"]
    args += ["--feedback-max-rows", "500", "--explain-max-rows", "8"]
    with ServerProcess(args, env={"BIGMODEL_HOME": str(tmp / "home")}) as s:
        yield {"url": s.url, "reg": reg, "tmp": tmp, "proc": s}
        assert s.stop() == 0


def test_feedback_makes_the_server_learn_and_serve_a_new_version(server):
    url, reg = server["url"], server["reg"]
    x, y = drift_rows(1200, seed=11, start=3 * 10**6, drift_at=(0,))  # the world changed: new concept
    for i in range(0, 1200, 200):
        status, body = _call(
            url, "/v2/models/drift/feedback", {"rows": _rows(x[i : i + 200], y[i : i + 200])}
        )
        assert status == 202 and body["accepted"] == 200 and body["model"] == "drift", body
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, info = _call(url, "/v2/models/drift/feedback", method="GET")
        if info["learned_rows"] == 1200:
            break
        time.sleep(0.2)
    assert info["learned_rows"] == 1200 and info["failed_rows"] == 0, info
    learner = info["learner"]
    assert learner["promotions"] >= 1 and learner["version"] == reg.aliases("drift")["production"] > 1
    assert reg.show("drift@production")["method"] == "online"

    # the server follows the alias it polls: the new version answers
    new = str(learner["version"])
    c = th.InferenceServerClient(url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {KEY}"}
    deadline = time.monotonic() + 20
    while c.get_model_metadata("drift", headers=headers)["parameters"]["version"] != new:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    xt, yt = drift_rows(400, seed=11, start=4 * 10**6, drift_at=(0,))
    inp = th.InferInput("input", list(xt.shape), "FP32")
    inp.set_data_from_numpy(xt)
    r = c.infer("drift", [inp], headers=headers)
    assert r.get_response()["model_version"] == new
    assert (r.as_numpy("label") == yt).mean() > 0.8  # the learned concept, live

    text = urllib.request.urlopen(urllib.request.Request(url + "/metrics", headers=headers)).read().decode()
    assert 'bigmodel_online_feedback_rows_total{model="drift",outcome="learned"} 1200.0' in text
    assert f'bigmodel_online_serving_version{{alias="production",model="drift"}} {new}.0' in text
    assert 'bigmodel_online_events_total{event="promote",model="drift"}' in text
    assert (
        'bigmodel_online_score{metric="accuracy",model="drift",model_role="serving",scope="stream"}' in text
    )


def test_feedback_and_explain_reject_bad_input_naming_the_field(server):
    url = server["url"]
    x, y = drift_rows(3, seed=1)
    good = _rows(x, y)
    cases = [
        ({"rows": [{k: v for k, v in good[0].items() if k != "f3"}]}, 400, "rows[0] has no feature 'f3'"),
        ({"rows": [{k: v for k, v in good[0].items() if k != "label"}]}, 400, "rows[0] has no label 'label'"),
        ({"rows": [{**good[0], "label": "cat"}]}, 400, "label column 'label' has unknown class 'cat'"),
        ({"rows": [{**good[0], "f1": "high"}]}, 400, "rows[0] feature 'f1' must be a number"),
        (
            {"rows": [good[0], {**good[1], "f5": None}]},
            400,
            "feature column 'f5' has a missing value (row 1)",
        ),
        ({"rows": good, "labels": [1]}, 400, "unknown field 'labels'"),
        ({"rows": []}, 400, "'rows' must be a non-empty list"),
        ({"rows": good * 200}, 413, "at most 500 per request"),
        (b"{not json", 400, "not valid JSON"),
    ]
    before = _call(url, "/v2/models/drift/feedback", method="GET")[1]["rejected_requests"]
    for body, status, message in cases:
        got, answer = _call(url, "/v2/models/drift/feedback", body)
        assert got == status and message in answer["error"], (
            body if isinstance(body, bytes) else message,
            answer,
        )
    # every refused request is counted (the `refused` rows counter is only for a full queue)
    status = _call(url, "/v2/models/drift/feedback", method="GET")[1]
    assert status["rejected_requests"] == before + len(cases), status
    req = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req) as resp:
        metrics = resp.read().decode()
    assert (
        f'bigmodel_online_feedback_rejected_requests_total{{model="drift"}} {before + len(cases)}.0'
        in metrics
    )
    assert _call(url, "/v2/models/ghost/feedback", {"rows": good})[0] == 404
    got, answer = _call(url, "/v2/models/pinned/feedback", {"rows": good})
    assert got == 409 and "pinned to a version" in answer["error"]
    for path in ("/v2/models/drift/feedback", "/v2/models/drift/explain"):
        got, answer = _call(url, path, {"rows": good}, key=None)
        assert got == 401 and "API key" in answer["error"]
        assert _call(url, path, {"rows": good}, key="wrong")[0] == 401

    explain_cases = [
        ({"rows": good, "method": "magic"}, 400, "unknown method 'magic'"),
        ({"rows": good, "n_steps": 10**6}, 400, "'n_steps' must be an integer from 2 to 256"),
        ({"rows": good * 3}, 413, "at most 8 per request"),
        ({"rows": [{"f0": 1.0}]}, 400, "rows[0] has no feature 'f1'"),
        ({"rows": good, "target": "dog"}, 400, "unknown target class 'dog'"),
        ({"rows": good, "why": 1}, 400, "unknown field 'why'"),
    ]
    for body, status, message in explain_cases:
        got, answer = _call(url, "/v2/models/drift/explain", body)
        assert got == status and message in answer["error"], (message, answer)
    assert _call(url, "/v2/models/drift/versions/99/explain", {"rows": good})[0] == 404


def test_explain_route_matches_the_core_on_the_served_version(server, tmp_path: Path):
    url, reg = server["url"], server["reg"]
    x, _ = drift_rows(3, seed=2)
    status, got = _call(url, "/v2/models/pinned/versions/1/explain", {"rows": _rows(x), "n_steps": 32})
    assert status == 200 and got["model"] == "pinned" and got["model_version"] == "1"
    want = explain_batch(artifacts.load_model(reg.resolve("pinned:1")), x, "integrated_gradients", n_steps=32)
    assert len(got["rows"]) == 3 and got["features"] == want["features"]
    for g, w in zip(got["rows"], want["rows"], strict=True):
        assert g["convergence_delta"] == pytest.approx(w["convergence_delta"], abs=1e-5)
        assert g["attributions"] == pytest.approx(w["attributions"], abs=1e-5)
    status, shap = _call(url, "/v2/models/pinned/explain", {"rows": _rows(x), "method": "gradient_shap"})
    assert status == 200 and "convergence_delta" not in shap["rows"][0]

    # the CLI takes the same registry name: bigmodel explain NAME@ALIAS
    csv = tmp_path / "rows.csv"
    csv.write_text("f0,f1,f2,f3,f4,f5,f6,f7\n" + "".join(",".join(map(str, r)) + "\n" for r in x.tolist()))
    out = _json(
        run_cli(
            "explain", "pinned:1", "--registry", str(reg.location), "--input", str(csv),
            "--steps", "32", "--out", str(tmp_path / "why.png"), "--json",
        )
    )  # fmt: skip
    for mine, served in zip(out["rows"], got["rows"], strict=True):
        assert mine["attributions"] == pytest.approx(served["attributions"], abs=1e-5)
    bad = run_cli("explain", "pinned@staging", "--registry", str(reg.location), "--input", str(csv))
    assert bad.returncode == 2 and "has no alias 'staging'" in bad.stderr


def test_a_server_without_online_learns_nothing(tmp_path: Path, trained: Path):
    reg = _registry(tmp_path / "registry", trained)
    x, y = drift_rows(2, seed=1)
    with ServerProcess(["--registry", str(reg.location), "--access-log", "off"]) as s:
        got, answer = _call(s.url, "/v2/models/drift/feedback", {"rows": _rows(x, y)}, key=None)
        assert got == 404 and "start it with --online" in answer["error"]
    assert reg.aliases("drift") == {"production": 1} and len(reg.versions("drift")) == 1
    out = run_cli("serve", "--registry", str(reg.location), "--online", "--host", "0.0.0.0", "--port", "0")
    assert out.returncode == 2 and "needs --api-key" in out.stderr


def test_ctrl_c_stops_a_learning_server_without_tracebacks(tmp_path: Path, trained: Path):
    """Ctrl-C reaches the whole process group, learner processes included: they printed a
    KeyboardInterrupt traceback each (a new user's trial)."""
    import os
    import signal

    reg = _registry(tmp_path / "registry", trained)
    cmd = [str(BIN / "bigmodel"), "serve", "--registry", str(reg.location), "--port", "0", "--json"]
    cmd += ["--online", "--access-log", "off"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        x, y = drift_rows(20, seed=3)
        got, _ = _call(url, "/v2/models/drift/feedback", {"rows": _rows(x, y)}, key=None)
        assert got == 202  # the learner process now starts (and imports torch: ~2 s)
        time.sleep(0.3)  # Ctrl-C while it is still importing
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err, err.decode()[-2000:]
