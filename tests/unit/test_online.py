"""Online learning parts: detectors against River on known streams, prequential bookkeeping, the
policy's decisions (promote, keep, reset, rollback, an operator's move), the stream reader."""

from __future__ import annotations

import copy
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from bigmodel import BigModelError, artifacts, tasks
from bigmodel.online_learning import ADWIN, OnlineConfig, OnlineLearner, PageHinkley, Publisher, decide
from bigmodel.online_learning.rows import read_stream
from bigmodel.online_learning.synthetic import drift_rows
from bigmodel.registry import Registry
from tests.models import fit_model_dir, make_model_dir

river_drift = pytest.importorskip("river.drift")


def _detections(detector, stream) -> list[int]:
    out = []
    for i, v in enumerate(stream):
        detector.update(v)
        if detector.drift_detected:
            out.append(i)
    return out


def test_detectors_match_river_on_its_documented_stream():
    rng = random.Random(12345)
    stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    assert _detections(ADWIN(), stream) == _detections(river_drift.ADWIN(), stream) == [1023]
    assert _detections(PageHinkley(), stream) == _detections(river_drift.PageHinkley(), stream) == [1006]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_rate_change_is_detected_within_a_bounded_delay_and_no_false_alarm(seed: int):
    r = np.random.default_rng(seed)
    errors = np.r_[r.random(3000) < 0.1, r.random(1000) < 0.4].astype(float)  # 10% -> 40% at row 3000
    for mine, theirs in (
        (ADWIN(), river_drift.ADWIN()),
        (PageHinkley(mode="up"), river_drift.PageHinkley(mode="up")),
    ):
        got, ref = _detections(mine, errors), _detections(theirs, errors)
        assert got and ref and 3000 <= got[0] <= 3200, (type(mine).__name__, got[:3])
        assert abs(got[0] - ref[0]) <= 64  # ADWIN checks every 32 rows over fewer split points
        assert not [i for i in got if i < 3000]  # no alarm on the stationary part


def test_decisions_with_margins():
    assert decide("binary", 0.02, serving=0.80, learner=0.83) == "promote"
    assert decide("binary", 0.02, serving=0.80, learner=0.81) == "keep"
    assert decide("binary", 0.02, serving=0.80, learner=0.77) == "reset"
    assert decide("multiclass", 0.0, serving=0.80, learner=0.80) == "keep"  # a tie never promotes
    assert decide("binary", 0.02, serving=0.80, learner=0.9, previous=0.85) == "rollback"
    assert decide("binary", 0.02, serving=0.80, learner=0.9, previous=0.81) == "confirm"
    # regression scores are mean squared errors: lower is better, the margin is relative
    assert decide("regression", 0.1, serving=1.0, learner=0.85) == "promote"
    assert decide("regression", 0.1, serving=1.0, learner=0.95) == "keep"
    assert decide("regression", 0.1, serving=0.5, learner=1.0) == "reset"
    with pytest.raises(ValueError, match="must not exceed window"):
        OnlineConfig(window=100, min_samples=200)


def test_prequential_scores_each_row_before_training_on_it(tmp_path: Path):
    x, y = drift_rows(300, seed=5)
    loaded = artifacts.load_model(make_model_dir(tmp_path / "m", features=8, task="binary", labels=[0, 1]))
    # a margin no window can clear: no decision replaces either model during the check
    cfg = OnlineConfig(window=50, min_samples=50, check_every=7, margin=0.99, lr=0.05, publish=False)
    learner = OnlineLearner(loaded, None, cfg, curve_every=1)
    for start in range(0, 300, 64):  # chunks that do not line up with decisions
        learner.learn(x[start : start + 64], y[start : start + 64])

    # the same SGD by hand: the learner's score for row k comes from the model after k-1 steps
    model = copy.deepcopy(loaded.module).requires_grad_(True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    want = []
    for k in range(300):
        xk, yk = torch.from_numpy(x[k : k + 1]), torch.tensor([float(y[k])])
        logits = model(xk)
        want.append(float((logits[0, 0] > 0) == bool(y[k])))
        opt.zero_grad()
        tasks.loss_sum(loaded.spec, logits, yk).backward()
        opt.step()
    assert not [e for e in learner.events if e["event"] != "drift"]
    assert [c[2] for c in learner.curve] == want
    with torch.no_grad():
        frozen = ((loaded.module(torch.from_numpy(x))[:, 0] > 0).numpy() == y).astype(float)
    assert [c[1] for c in learner.curve] == frozen.tolist()  # the serving model never trains
    s = learner.summary()
    assert s["rows"] == 300 and len(learner.curve) == 300
    assert s["prequential"]["serving"] == pytest.approx(np.mean([c[1] for c in learner.curve]))
    assert s["prequential"]["learner"] == pytest.approx(np.mean([c[2] for c in learner.curve]))


@pytest.fixture
def registered(tmp_path: Path):
    x, y = drift_rows(1000, seed=7)
    reg = Registry(tmp_path / "registry")
    reg.register(fit_model_dir(tmp_path / "m", x, y, steps=100), "m")
    reg.alias("m", 1, "production")
    pub = Publisher(reg, "m", "production")
    cfg = OnlineConfig(window=100, min_samples=50, check_every=50, margin=0.05)
    return reg, pub, OnlineLearner(pub.load(1), 1, cfg, pub)


def _fill(learner: OnlineLearner, serving: float, learner_score: float, previous: float, n: int) -> None:
    learner.window.clear()
    for i in range(n):  # exact window means: the first round(score * n) rows right
        learner.window.append((float(i < serving * n), float(i < learner_score * n), float(i < previous * n)))


def test_policy_promotes_keeps_and_rolls_back_through_the_registry(registered):
    reg, _, learner = registered
    _fill(learner, 0.80, 0.82, np.nan, 100)
    assert learner._check() == [] and reg.aliases("m") == {"production": 1}  # within the margin: keep
    _fill(learner, 0.80, 0.90, np.nan, 40)
    assert learner._check() == []  # fewer than min_samples rows: no decision
    _fill(learner, 0.60, 0.90, np.nan, 60)
    (e,) = learner._check()
    assert e["event"] == "promote" and e["version"] == 2 and e["parent"] == 1
    assert reg.aliases("m") == {"production": 2}
    rec = reg.show("m:2")
    assert rec["method"] == "online" and rec["parent_refs"] == ["m:1"]
    assert rec["metrics"]["prequential_accuracy"] == pytest.approx(0.9)
    assert artifacts.load_model(reg.resolve("m:2")).meta.features == learner.meta.features

    # probation: the new version trails the one before it by more than the margin -> rollback
    _fill(learner, 0.70, 0.70, 0.80, 60)
    (e,) = learner._check()
    assert e["event"] == "rollback" and e["rolled_back"] == 2 and e["version"] == 1
    assert reg.aliases("m") == {"production": 1} and learner.version == 1
    assert learner.previous is None and len(learner.window) == 0

    # promoted again, then confirmed: probation ends and the next decision is an ordinary one
    _fill(learner, 0.60, 0.90, np.nan, 60)
    assert learner._check()[0]["version"] == 3
    _fill(learner, 0.80, 0.81, 0.79, 60)
    assert [e["event"] for e in learner._check()] == ["confirm"] and reg.aliases("m") == {"production": 3}

    # a learner a whole window behind restarts from the serving version; a partial window does not
    _fill(learner, 0.90, 0.50, np.nan, 60)
    assert learner._check() == []
    _fill(learner, 0.90, 0.50, np.nan, 100)
    assert [e["event"] for e in learner._check()] == ["reset"]


def test_an_operator_alias_move_always_wins(registered):
    reg, pub, learner = registered
    reg.register(reg.resolve("m:1"), "m")  # version 2, by hand
    reg.alias("m", 2, "production")  # an operator moves the alias
    _fill(learner, 0.6, 0.9, np.nan, 60)
    (e,) = learner._check()
    assert e["event"] == "restart" and learner.version == 2  # the learner follows, nothing registered
    assert reg.aliases("m") == {"production": 2} and len(reg.versions("m")) == 2
    # the compare-and-set itself
    assert not reg.move_alias("m", "production", 1, expect=1)
    assert reg.move_alias("m", "production", 1, expect=2) and reg.aliases("m") == {"production": 1}
    assert reg.move_alias("m", "staging", 2, expect=None) and not reg.move_alias(
        "m", "staging", 1, expect=None
    )
    # a promotion racing an operator: registered, but the alias stays where the operator put it
    assert pub.promote(learner.learner, learner.meta, 2, {"metrics": {}, "params": {}}) is None
    assert reg.aliases("m")["production"] == 1


def test_streams_csv_jsonl_stdin_in_chunks_and_errors_name_the_field(tmp_path: Path):
    meta = artifacts.read_meta(make_model_dir(tmp_path / "m", features=3, task="binary", labels=[0, 1]))
    x, y = drift_rows(2500, features=3, seed=1)
    csv = tmp_path / "s.csv"
    csv.write_text(
        "f0,f1,f2,target,extra\n" + "".join(f"{a},{b},{c},{d},z\n" for (a, b, c), d in zip(x, y, strict=True))
    )
    lines = [
        json.dumps({"f0": float(a), "f1": float(b), "f2": float(c), "target": int(d)})
        for (a, b, c), d in zip(x, y, strict=True)
    ]
    jsonl = "\n".join(lines) + "\n"
    for stream in (
        csv,
        io.BufferedReader(io.BytesIO(csv.read_bytes())),
        io.BufferedReader(io.BytesIO(jsonl.encode())),
    ):
        chunks = list(read_stream(stream, meta, chunk_rows=1000))
        assert [len(c[0]) for c in chunks] == [1000, 1000, 500]
        np.testing.assert_allclose(np.concatenate([c[0] for c in chunks]), x, rtol=1e-6)
        assert np.concatenate([c[1] for c in chunks]).tolist() == y.tolist()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n{oops\n")
    with pytest.raises(BigModelError, match=r"bad.jsonl line 2: not valid JSON"):
        list(read_stream(bad, meta))
    nolabel = tmp_path / "nolabel.csv"
    nolabel.write_text("f0,f1,f2\n1,2,3\n")
    with pytest.raises(BigModelError, match=r"missing label column 'target'"):
        list(read_stream(nolabel, meta))
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"f0": 1, "f1": 2, "f2": 3, "target": 5}) + "\n")
    with pytest.raises(BigModelError, match=r"label column 'target' has unknown class '5'"):
        list(read_stream(unknown, meta))
    with pytest.raises(
        BigModelError, match=r"^stream: row 1 has no feature 'f2'$"
    ):  # rows from 0, as in a CSV
        list(
            read_stream(
                io.BufferedReader(
                    io.BytesIO(
                        b'{"f0": 1, "f1": 2, "f2": 3, "target": 0}\n\n{"f0": 1, "f1": 2, "target": 0}\n'
                    )
                ),
                meta,
            )
        )
    late = tmp_path / "late.csv"  # rows are numbered in the file, not in the chunk that holds them
    late.write_text("f0,f1,f2,target\n" + "1,2,3,0\n" * 1500 + "1,2,3,cat\n")
    with pytest.raises(BigModelError, match=r"unknown class 'cat' \(row 1500;"):
        list(read_stream(late, meta, chunk_rows=1000))
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b'\xff\xfe{"f0": 1}\n')
    with pytest.raises(BigModelError, match=r"binary.jsonl: not UTF-8 text"):
        list(read_stream(binary, meta))


def test_a_bad_row_before_any_alias_move_says_nothing_of_one(tmp_path: Path):
    from bigmodel.online_learning import online

    x, y = drift_rows(200, seed=3)
    reg = Registry(tmp_path / "registry")
    reg.register(fit_model_dir(tmp_path / "m", x, y, steps=20), "m")  # no alias: starts from the latest
    stream = tmp_path / "s.jsonl"
    rows = [
        {**{f"f{j}": float(v) for j, v in enumerate(r)}, "label": int(t)} for r, t in zip(x, y, strict=True)
    ]
    rows[5]["f0"] = "x"
    stream.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BigModelError, match=r"s.jsonl: row 5 feature 'f0' must be a number, got 'x'$"):
        online("m", str(stream), registry=reg.location, progress=False)
    assert reg.aliases("m") == {}
