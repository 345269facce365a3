"""Federated learning: partitions, aggregation, screening, FedProx/FedSGD local steps, and whole
simulated runs with misbehaving clients."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bigmodel.artifacts import load_model
from bigmodel.errors import BigModelError
from bigmodel.federation import FederatedConfig, federated
from bigmodel.federation.aggregate import Update, aggregate, clip, l2, screen
from bigmodel.federation.client import LocalPlan, get_weights, local_update, proximal_term, set_weights
from bigmodel.federation.config import validate
from bigmodel.federation.partition import dirichlet, iid
from bigmodel.models import MLP
from bigmodel.tasks import TaskSpec

# ---- partitions ------------------------------------------------------------------------------


def test_iid_partition_is_a_balanced_deterministic_split():
    parts = iid(103, 10, seed=1)
    rows = np.concatenate(parts)
    assert sorted(rows.tolist()) == list(range(103))  # disjoint and complete
    assert {len(p) for p in parts} <= {10, 11}
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid(103, 10, seed=1), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, iid(103, 10, seed=2), strict=True))
    with pytest.raises(BigModelError, match="more than the 5 training rows"):
        iid(5, 10, seed=0)


def _label_entropy(parts, labels, k):
    h = []
    for p in parts:
        q = np.bincount(labels[p], minlength=k) / len(p)
        q = q[q > 0]
        h.append(float(-(q * np.log(q)).sum()))
    return float(np.mean(h))


def test_dirichlet_partition_skews_labels_more_as_alpha_shrinks():
    labels = np.random.default_rng(0).integers(0, 10, 2000)
    skewed = dirichlet(labels, 20, alpha=0.1, seed=0)
    mild = dirichlet(labels, 20, alpha=100.0, seed=0)
    for parts in (skewed, mild):
        assert sorted(np.concatenate(parts).tolist()) == list(range(2000))
        assert min(len(p) for p in parts) >= 2
    # alpha=100 is close to IID (entropy near log 10); alpha=0.1 leaves each client a few classes
    assert _label_entropy(mild, labels, 10) > 2.1
    assert _label_entropy(skewed, labels, 10) < 1.2
    with pytest.raises(BigModelError, match="too many"):
        dirichlet(labels[:10], 20, alpha=0.5, seed=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [("dirichlet", "needs a number"), ("dirichlet:-1", "must be > 0"), ("shards:2", "expected iid")],
)
def test_bad_partition_is_one_line_naming_the_key(text, message):
    with pytest.raises(BigModelError, match=f"config key 'partition'.*{message}"):
        validate({"partition": text})


def test_config_cross_checks():
    with pytest.raises(BigModelError, match="dp_noise needs dp_clip"):
        validate({"dp_noise": 1.0})
    with pytest.raises(BigModelError, match="faults names client 5"):
        validate({"clients": 3, "faults": {5: "nan"}})
    with pytest.raises(BigModelError, match="unknown config key 'epochs'"):
        validate({"epochs": 3})


# ---- aggregation and screening -------------------------------------------------------------


def _w(*values):
    return [np.array(values, dtype=np.float32)]


def test_fedavg_weights_updates_by_examples():
    g = _w(0.0, 0.0)
    ups = [Update(0, _w(1.0, 2.0), 10), Update(1, _w(4.0, -1.0), 30)]
    new = aggregate(g, ups)
    np.testing.assert_allclose(new[0], [(10 * 1 + 30 * 4) / 40, (10 * 2 - 30 * 1) / 40], rtol=1e-6)
    assert new[0].dtype == np.float32
    assert np.array_equal(aggregate(g, [])[0], g[0])  # nobody left: the model stays


def test_dp_clips_each_update_averages_uniformly_and_adds_scaled_noise():
    g = _w(0.0, 0.0)
    big, small = Update(0, _w(30.0, 40.0), 1000), Update(1, _w(0.3, 0.4), 1)
    new = aggregate(g, [big, small], dp_clip=1.0)  # no noise: exact
    # big is clipped to norm 1 -> (0.6, 0.8); uniform average with (0.3, 0.4)
    np.testing.assert_allclose(new[0], [0.45, 0.6], rtol=1e-6)
    assert l2(clip([np.array([3.0, 4.0])], 2.0)) == pytest.approx(2.0)
    # noise: std = noise * clip / m on every coordinate
    g = [np.zeros(20000, dtype=np.float32)]
    ups = [Update(k, [np.zeros(20000, dtype=np.float32)], 5) for k in range(4)]
    noisy = aggregate(g, ups, dp_clip=2.0, dp_noise=1.0, rng=np.random.default_rng(0))
    assert float(noisy[0].std()) == pytest.approx(1.0 * 2.0 / 4, rel=0.05)


def test_screen_excludes_nan_oversized_and_misshapen_updates_with_reasons():
    g = [np.zeros(3, dtype=np.float32)]
    honest = [Update(k, [np.full(3, 0.1 * (k + 1), dtype=np.float32)], 10) for k in range(4)]
    nan = Update(7, [np.array([0.1, np.nan, 0.0], dtype=np.float32)], 10)
    huge = Update(8, [np.full(3, 1e4, dtype=np.float32)], 10)
    shape = Update(9, [np.zeros(4, dtype=np.float32)], 10)
    s = screen(g, [*honest, nan, huge, shape], outlier_factor=10.0)
    assert [u.cid for u in s.accepted] == [0, 1, 2, 3]
    reasons = {e["client"]: e["reason"] for e in s.excluded}
    assert set(reasons) == {7, 8, 9}
    assert "NaN" in reasons[7] and "median" in reasons[8] and "shape (4,)" in reasons[9]
    # an absolute bound works without the median rule (and with fewer than 3 clients)
    s = screen(g, [honest[0], huge], max_norm=5.0, outlier_factor=None)
    assert [u.cid for u in s.accepted] == [0] and "max_update_norm" in s.excluded[0]["reason"]


# ---- local steps -------------------------------------------------------------------------


def _toy(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(40, 3)
    y = (x[:, 0] > 0).float()
    return MLP(3, 1, [8]), x, y, TaskSpec("binary", 1, ["a", "b"])


def test_proximal_term_and_its_gradient():
    model, *_ = _toy()
    anchor = [p.detach().clone() + 0.5 for p in model.parameters()]
    term = proximal_term(model, anchor, mu=0.2)
    n = sum(p.numel() for p in model.parameters())
    assert float(term.detach()) == pytest.approx(0.5 * 0.2 * 0.25 * n, rel=1e-5)
    term.backward()
    for p, a in zip(model.parameters(), anchor, strict=True):
        torch.testing.assert_close(p.grad, 0.2 * (p.detach() - a))


def test_fedprox_keeps_the_local_model_closer_to_the_global_one():
    model, x, y, spec = _toy()
    start = get_weights(model)
    moved = {}
    for mu in (0.0, 1.0, 10.0):
        set_weights(model, start)
        plan = LocalPlan("fedprox", epochs=5, batch_size=8, lr=0.1, mu=mu, seed=0)
        local_update(model, x, y, spec, plan, rnd=1)
        moved[mu] = l2([w - s for w, s in zip(get_weights(model), start, strict=True)])
    assert moved[0.0] > moved[1.0] > moved[10.0] > 0


def test_fedsgd_is_one_full_batch_gradient_step():
    model, x, y, spec = _toy()
    start = get_weights(model)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    local_update(model, x, y, spec, LocalPlan("fedsgd", 1, 1, lr=0.5, mu=0.0, seed=0), rnd=1)
    for w, s, gr in zip(get_weights(model), start, grads, strict=True):
        np.testing.assert_allclose(w, s - 0.5 * gr.numpy(), rtol=1e-5, atol=1e-6)


# ---- whole simulated runs ------------------------------------------------------------------


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_simulated_run_survives_nan_huge_and_crashing_clients(tmp_path: Path):
    cfg = FederatedConfig(
        dataset="breast_cancer",
        hidden=[16],
        clients=6,
        rounds=4,
        partition="iid",
        faults={1: "nan", 2: "huge", 4: "crash"},
        out=str(tmp_path / "run"),
        progress=False,
    )
    s = federated(cfg)
    assert s["rounds"] == 4 and s["metrics"]["accuracy"] > 0.85
    recs = _records(tmp_path / "run")
    assert [r["round"] for r in recs] == [0, 1, 2, 3, 4]
    for r in recs[1:]:
        excluded = {e["client"]: e["reason"] for e in r["excluded"]}
        assert "NaN" in excluded[1] and "median" in excluded[2]
        assert 1 not in r["clients"] and 2 not in r["clients"]
    assert recs[1]["clients"] == [0, 3, 4, 5] and recs[1]["dropped"] == 0
    # the crashing client fails from round 2 on; the rounds go on without it
    assert all(r["dropped"] == 1 and r["clients"] == [0, 3, 5] for r in recs[2:])
    assert "crashed" in recs[2]["dropped_reasons"][0]
    assert s["dropped"] == 3 and s["excluded"] == 8
    loaded = load_model(tmp_path / "run")
    assert loaded.meta.lineage.method == "federated"
    assert loaded.meta.lineage.params["clients"] == 6
    assert (tmp_path / "run" / "accuracy.png").stat().st_size > 1000


def test_dp_run_and_target_accuracy_stop(tmp_path: Path):
    s = federated(
        dataset="breast_cancer",
        hidden=[16],
        clients=5,
        rounds=30,
        local_epochs=2,
        dp_clip=5.0,
        dp_noise=0.1,
        target_accuracy=0.9,
        out=str(tmp_path / "dp"),
        progress=False,
    )
    assert s["rounds_to_target"] is not None and s["rounds_to_target"] < 30
    assert s["metrics"]["accuracy"] >= 0.9
    assert s["rounds"] == s["rounds_to_target"]  # the remaining rounds did nothing
    with pytest.raises(BigModelError, match="already holds a run"):
        federated(dataset="breast_cancer", clients=2, rounds=1, out=str(tmp_path / "dp"), progress=False)


def test_a_run_whose_every_update_is_excluded_stops_with_a_reason(tmp_path: Path):
    s = federated(
        dataset="breast_cancer", clients=3, rounds=20, faults={0: "nan", 1: "nan", 2: "nan"},
        out=str(tmp_path / "futile"), progress=False,
    )  # fmt: skip
    assert s["rounds"] == 3 and "excluded for 3 rounds in a row" in s["stopped"]
    assert s["metrics"]["accuracy"] == _records(tmp_path / "futile")[0]["val_accuracy"]  # never moved
