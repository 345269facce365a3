"""The demo's online step: the served model keeps learning from live feedback after the world changed."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bigmodel import console
from bigmodel.errors import BigModelError
from bigmodel.registry import Registry
from bigmodel.serve.launch import ServerProcess

SHIFTED = ["worst_radius", "worst_perimeter", "worst_area", "mean_concave_points", "worst_concave_points"]


def _call(url: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url + path, data=data)) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise BigModelError(f"{path}: the server answered {err.code}: {err.read().decode()[:300]}") from None


def demo_online(
    work: Path, csv: Path, *, label: str, say: Callable[..., None], json_mode: bool = False
) -> dict[str, Any]:
    """Serve ``breast_cancer`` (registered in ``work/registry`` by the serving step) with online
    learning on; a recalibrated scanner now reads five size features 30% high; 400 labelled cases
    come back as feedback; the policy decides whether a new version takes over ``production``;
    169 other cases, never sent as feedback, measure the served version before and after."""
    import pyarrow.csv as pcsv

    name = "breast_cancer"
    reg = Registry(work / "registry")
    before = reg.aliases(name).get("production")
    table = pcsv.read_csv(csv)
    rows = table.to_pylist()
    for r in rows:  # the new scanner's readings
        for f in SHIFTED:
            r[f] *= 1.3
    order = np.random.default_rng(0).permutation(len(rows)).tolist()
    feedback, held_out = [rows[i] for i in order[:400]], [rows[i] for i in order[400:]]
    say(
        f"[bold]7. online[/bold] a recalibrated scanner reads {len(SHIFTED)} size features 30% high; "
        f"serve {name} with --online and send {len(feedback)} labelled cases back as feedback"
    )
    args = ["--registry", reg.location, "--models", name, "--online", "--poll-interval-s", "0.2"]
    for setting in ("window=200", "min_samples=100", "check_every=25"):
        args += ["--online-set", setting]
    server = ServerProcess([*args, "--access-log", "off"]).start()
    try:
        features = _call(server.url, f"/v2/models/{name}")["parameters"]["features"]

        def accuracy() -> tuple[str, float]:
            x = [[r[f] for f in features] for r in held_out]
            body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [len(x), len(features)],
                                "data": x}], "outputs": [{"name": "label"}]}  # fmt: skip
            out = _call(server.url, f"/v2/models/{name}/infer", body)
            got = out["outputs"][0]["data"]
            return out["model_version"], float(
                np.mean([g == r[label] for g, r in zip(got, held_out, strict=True)])
            )

        v0, acc0 = accuracy()
        for i in range(0, len(feedback), 100):
            _call(server.url, f"/v2/models/{name}/feedback", {"rows": feedback[i : i + 100]})
        deadline = time.monotonic() + 60
        while (status := _call(server.url, f"/v2/models/{name}/feedback"))["learned_rows"] < len(feedback):
            if time.monotonic() > deadline:
                raise BigModelError(f"the online learner did not finish in 60 s: {status}")
            time.sleep(0.1)
        learner = status["learner"]
        target = str(learner["version"])
        while (v1 := _call(server.url, f"/v2/models/{name}")["parameters"]["version"]) != target:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        v1, acc1 = accuracy()
    finally:
        server.stop()
    after = reg.aliases(name).get("production")
    moved = after != before
    events = [e for e in learner["events"] if e["event"] in ("drift", "promote", "rollback", "reset")]
    say(
        f"production {'moved' if moved else 'kept'}: version {before} -> {after}"
        + (f" ({reg.show(f'{name}:{after}')['method']} lineage, parent {before})" if moved else "")
    )
    table_rows = {
        "feedback rows learned": status["learned_rows"],
        "prequential accuracy, served": learner["prequential"]["serving"],
        "prequential accuracy, learner": learner["prequential"]["learner"],
        "promotions / rollbacks": f"{learner['promotions']} / {learner['rollbacks']}",
        f"held-out accuracy, version {v0} (before)": acc0,
        f"held-out accuracy, version {v1} (after)": acc1,
    }
    console.show(console.kv_table("online learning from feedback", table_rows), json_mode=json_mode)
    return {
        "production_before": before,
        "production_after": after,
        "moved": moved,
        "events": events,
        "held_out_accuracy": {"before": acc0, "after": acc1, "versions": [v0, v1]},
        "learner": {k: learner[k] for k in ("rows", "prequential", "promotions", "rollbacks", "resets")},
    }
