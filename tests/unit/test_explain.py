"""Explanations: Integrated Gradients completeness, exact answers on a linear model, targets,
and inputs checked against the model's schema."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest
import torch

from bigmodel.artifacts import Lineage, ModelMeta, load_model, write_model_dir
from bigmodel.errors import BigModelError
from bigmodel.explanations import explain, explain_batch, features_from_table, labels_from_column
from bigmodel.explanations.core import check_batch, target_code
from bigmodel.models import build_model, mlp_architecture, set_standardization
from bigmodel.tasks import TaskSpec

FEATURES = ["age", "dose", "weight", "noise"]
MEAN, STD = [50.0, 2.0, 70.0, 0.0], [10.0, 0.5, 15.0, 1.0]


def _model_dir(tmp_path: Path, task: str = "binary", hidden=(8,), activation="tanh", seed=0) -> Path:
    spec = {
        "binary": TaskSpec("binary", 1, ["benign", "malignant"]),
        "multiclass": TaskSpec("multiclass", 3, ["a", "b", "c"]),
        "regression": TaskSpec("regression", 1, None, target_mean=100.0, target_std=20.0),
    }[task]
    torch.manual_seed(seed)
    arch = mlp_architecture(4, spec.num_outputs, list(hidden), activation)
    model = build_model(arch)
    set_standardization(model, MEAN, STD)
    meta = ModelMeta(
        architecture=arch,
        task=spec.to_json(),
        features=FEATURES,
        label="diagnosis",
        preprocessing={"mean": MEAN, "std": STD},
        lineage=Lineage(method="train"),
    )
    path = tmp_path / f"{task}-{len(hidden)}"
    write_model_dir(path, model, meta)
    return path


def _rows(n=6, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.array(MEAN) + np.array(STD) * rng.standard_normal((n, 4)) * 2).astype(np.float32)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_integrated_gradients_completeness(tmp_path: Path, task: str):
    loaded = load_model(_model_dir(tmp_path, task))
    r = explain_batch(loaded, _rows(), "integrated_gradients", n_steps=64)
    for row in r["rows"]:
        total = sum(row["attributions"].values())
        gap = row["output"] - row["baseline_output"]
        # Captum's delta is exactly the shortfall of completeness ...
        assert total - gap == pytest.approx(row["convergence_delta"], abs=1e-4)
        # ... and on a smooth network 64 steps make it tiny
        assert abs(row["convergence_delta"]) <= 0.01 * abs(gap) + 1e-4
        assert row["delta_flagged"] is False
    assert r["flagged"] == 0 and r["baseline"]["kind"] == "training mean"


def test_delta_flag_follows_the_five_percent_rule(tmp_path: Path):
    loaded = load_model(_model_dir(tmp_path, "binary", hidden=(32, 32), activation="relu", seed=3))
    r = explain_batch(loaded, _rows(40, seed=5) * 3, "integrated_gradients", n_steps=2)
    flags = [abs(x["convergence_delta"]) > 0.05 * abs(x["output"] - x["baseline_output"]) for x in r["rows"]]
    assert [x["delta_flagged"] for x in r["rows"]] == flags
    assert r["flagged"] == sum(flags) > 0  # two steps are too few for a ReLU network


def test_linear_model_attributions_are_exact_for_ig_and_ablation(tmp_path: Path):
    path = _model_dir(tmp_path, "binary", hidden=())  # logit = w . (x - mean) / std + b
    loaded = load_model(path)
    w = loaded.module.net[0].weight.detach().numpy()[0]
    x = _rows(3)
    expected = w * (x - np.array(MEAN)) / np.array(STD)  # (3, 4)
    for method in ("integrated_gradients", "feature_ablation"):
        r = explain_batch(loaded, x, method, target="malignant")
        got = np.array([[row["attributions"][f] for f in FEATURES] for row in r["rows"]])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # explaining the other class flips every sign (log-odds of class 0 = -logit)
    r0 = explain_batch(loaded, x, "feature_ablation", target=0)
    got0 = np.array([[row["attributions"][f] for f in FEATURES] for row in r0["rows"]])
    np.testing.assert_allclose(got0, -expected, rtol=1e-4, atol=1e-5)
    # gradient_shap: on a linear model, E[(x - b) . grad] is close to the exact answer
    gs = explain_batch(loaded, x, "gradient_shap", n_samples=64)
    assert gs["baseline"]["rows"] == 32 and "convergence_delta" not in gs["rows"][0]
    for row, out in zip(gs["rows"], expected, strict=True):
        sign = 1 if row["target"] == "malignant" else -1
        total = sum(row["attributions"].values())
        assert total == pytest.approx(sign * out.sum(), abs=0.35 * np.abs(out).sum() + 0.05)


def test_ablation_of_an_unused_feature_is_zero(tmp_path: Path):
    path = _model_dir(tmp_path, "multiclass", hidden=(8,))
    loaded = load_model(path)
    with torch.no_grad():
        loaded.module.net[0].weight[:, 3] = 0.0  # the model ignores 'noise'
    r = explain_batch(loaded, _rows(), "feature_ablation")
    assert all(row["attributions"]["noise"] == 0.0 for row in r["rows"])
    assert list(r["importance"])[-1] == "noise"
    assert {row["target"] for row in r["rows"]} <= {"a", "b", "c"}
    assert all(row["target"] == row["predicted"] for row in r["rows"])  # default: the prediction


def test_targets_and_batches_are_checked():
    spec = TaskSpec("multiclass", 3, ["a", "b", "c"])
    assert target_code(spec, "b") == 1 and target_code(spec, "2") == 2 and target_code(spec, 0) == 0
    with pytest.raises(BigModelError, match="unknown target class 'z' \\(classes: a, b, c\\)"):
        target_code(spec, "z")
    with pytest.raises(BigModelError, match="regression"):
        target_code(TaskSpec("regression", 1), "a")
    with pytest.raises(BigModelError, match=r"shape \(2, 3\); the model expects \(rows, 4\)"):
        check_batch(np.zeros((2, 3)), FEATURES)
    x = np.zeros((2, 4))
    x[1, 2] = np.nan
    with pytest.raises(
        BigModelError, match="feature column 'weight' has a NaN or infinite value \\(row 1\\)"
    ):
        check_batch(x, FEATURES)


def _csv(tmp_path: Path, name: str, cols: dict) -> Path:
    path = tmp_path / name
    pcsv.write_csv(pa.table(cols), path)
    return path


def test_csv_input_schema_errors_name_the_column(tmp_path: Path):
    meta = load_model(_model_dir(tmp_path)).meta
    good = {f: [1.0, 2.0] for f in FEATURES}
    t = pcsv.read_csv(_csv(tmp_path, "ok.csv", {"diagnosis": ["benign", "x"], **good, "id": [7, 8]}))
    assert features_from_table(t, meta, "ok.csv").shape == (2, 4)  # extra columns ignored, order fixed
    cases = {
        "missing feature column 'dose'": {k: v for k, v in good.items() if k != "dose"},
        "feature column 'age' is not numeric": {**good, "age": ["old", "young"]},
        "feature column 'weight' has a missing value (row 1)": {**good, "weight": [1.0, None]},
    }
    for message, cols in cases.items():
        t = pcsv.read_csv(_csv(tmp_path, "bad.csv", cols))
        with pytest.raises(BigModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
            features_from_table(t, meta, "bad.csv")


def test_labels_are_checked_against_the_model(tmp_path: Path):
    meta = load_model(_model_dir(tmp_path)).meta
    assert labels_from_column(["malignant", "benign"], meta, "feedback").tolist() == [1, 0]
    with pytest.raises(BigModelError, match="label column 'diagnosis' has unknown class 'maybe' \\(row 1"):
        labels_from_column(["benign", "maybe"], meta, "feedback")
    with pytest.raises(BigModelError, match="label column 'diagnosis' has a missing value"):
        labels_from_column(["benign", None], meta, "feedback")
    reg = load_model(_model_dir(tmp_path, "regression")).meta
    assert labels_from_column([1.5, 2], reg, "feedback").dtype == np.float32
    with pytest.raises(BigModelError, match="must be numeric"):
        labels_from_column(["high"], reg, "feedback")


def test_explain_function_writes_a_bar_chart_and_never_overwrites(tmp_path: Path):
    path = _model_dir(tmp_path)
    csv = _csv(tmp_path, "in.csv", {f: _rows(3)[:, j] for j, f in enumerate(FEATURES)})
    out = tmp_path / "bars.png"
    r = explain(path, csv, out=out, rows=2)
    assert len(r["rows"]) == 2 and out.stat().st_size > 1000 and r["png"] == str(out)
    before = out.read_bytes()
    with pytest.raises(BigModelError, match="already exists"):
        explain(path, csv, out=out)
    assert out.read_bytes() == before
    with pytest.raises(BigModelError, match="model not found"):
        explain(tmp_path / "nope", csv)
