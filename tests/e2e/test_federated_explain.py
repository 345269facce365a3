"""``bigmodel federated`` and ``bigmodel explain`` as a user drives them: real processes on
loopback (one killed mid-run), one-line errors with exit code 2."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from tests.conftest import BIN, ROOT, run_cli


def _json(out) -> dict:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _records(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _breast_cancer_csv(path: Path, rows: int) -> Path:
    from sklearn.datasets import load_breast_cancer

    b = load_breast_cancer()
    cols = {name.replace(" ", "_"): b.data[:rows, j] for j, name in enumerate(b.feature_names)}
    pcsv.write_csv(pa.table({"target": b.target[:rows], **cols}), path)  # the label column is ignored
    return path


def test_simulated_federated_then_explain_evaluate(tmp_path: Path):
    run = tmp_path / "fed"
    out = _json(
        run_cli(
            "federated", "--dataset", "breast_cancer", "--hidden", "16", "--clients", "8", "--rounds", "5",
            "--fraction", "0.5", "--partition", "dirichlet:1.0", "--strategy", "fedprox", "--mu", "0.1",
            "--local-epochs", "2", "--simulate", "--out", str(run), "--json",
        )
    )  # fmt: skip
    assert out["metrics"]["accuracy"] > 0.85 and out["rounds"] == 5 and out["world_size"] == 1
    assert out["clients"] == 8 and out["run_dir"] == str(run)
    recs = _records(run)
    assert [r["clients_sampled"] for r in recs[1:]] == [4] * 5  # C=0.5 of K=8
    for f in ("model.safetensors", "model.json", "metrics.jsonl", "accuracy.png", "federated.json"):
        assert (run / f).is_file(), f
    meta = json.loads((run / "model.json").read_text())
    assert meta["lineage"]["method"] == "federated" and meta["lineage"]["params"]["strategy"] == "fedprox"

    # the result is a normal model directory: evaluate and explain take it as it is
    ev = _json(run_cli("evaluate", str(run), "--json"))
    assert ev["metrics"]["accuracy"] == pytest.approx(out["metrics"]["accuracy"])
    csv = _breast_cancer_csv(tmp_path / "patients.csv", rows=3)
    png = tmp_path / "why.png"
    ex = _json(run_cli("explain", str(run), "--input", str(csv), "--out", str(png), "--json"))
    assert len(ex["rows"]) == 3 and ex["method"] == "integrated_gradients" and png.stat().st_size > 1000
    row = ex["rows"][0]
    assert (
        len(row["attributions"]) == 30
        and "convergence_delta" in row
        and row["target"] in ("malignant", "benign")
    )
    assert sum(row["attributions"].values()) == pytest.approx(
        row["output"] - row["baseline_output"] + row["convergence_delta"], abs=1e-3
    )
    # the human view: a table, and a default PNG name that never overwrites
    args = [str(BIN / "bigmodel"), "explain", str(run), "--input", str(csv), "--method", "feature_ablation"]
    for _ in range(2):
        table = subprocess.run([*args, "--target", "benign"], capture_output=True, text=True, cwd=tmp_path)
        assert table.returncode == 0 and "mean |attribution|" in table.stdout, table.stderr
    assert (tmp_path / "explain-patients-feature_ablation.png").is_file()
    assert (tmp_path / "explain-patients-feature_ablation-1.png").is_file()  # the first one was kept


def test_real_processes_survive_a_killed_client_and_exclude_a_nan_client(tmp_path: Path):
    run = tmp_path / "procs"
    cmd = [
        str(BIN / "bigmodel"), "federated", "--dataset", "digits", "--clients", "3", "--rounds", "10",
        "--partition", "iid", "--local-epochs", "8", "--processes", "--inject-fault", "1:nan",
        "--out", str(run), "--json", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    try:
        deadline = time.monotonic() + 150
        while not any(r["round"] >= 2 for r in _records(run)):  # two rounds with everyone
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        pids = json.loads((run / "processes.json").read_text())
        os.kill(pids["clients"]["2"], signal.SIGKILL)
        killed_after = max(r["round"] for r in _records(run))
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["rounds"] == 10 and out["world_size"] == 4 and out["mode"] == "processes"
    assert out["client_exit_codes"]["2"] == -signal.SIGKILL and out["client_exit_codes"]["0"] == 0
    recs = _records(run)
    assert [r["round"] for r in recs] == list(range(11))
    assert recs[1]["clients_available"] == 3 and recs[1]["clients"] == [0, 2]
    # client 1 sends NaN every round: excluded and logged, never averaged in
    assert all(e["client"] == 1 and "NaN" in e["reason"] for r in recs[1:] for e in r["excluded"])
    assert all(len(r["excluded"]) == 1 for r in recs[1:])
    assert "client 1 excluded: update has NaN" in stderr
    # after the kill, the rounds go on with client 0 alone
    after = recs[killed_after + 2 :]
    assert after and all(r["clients"] == [0] and r["clients_available"] == 2 for r in after)
    assert recs[-1]["val_accuracy"] > 0.8


def _bad_csv(tmp_path: Path, cols: dict) -> str:
    path = tmp_path / "bad.csv"
    pcsv.write_csv(pa.table(cols), path)
    return str(path)


def _model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bigmodel.federation import federated

    run = tmp_path_factory.mktemp("m") / "model"
    federated(dataset="breast_cancer", hidden=[8], clients=2, rounds=1, out=str(run), progress=False)
    return run


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _model(tmp_path_factory)


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (
            lambda t, m: ["explain", str(m), "--input", _bad_csv(t, {"mean_radius": [1.0]})],
            "missing feature column 'mean_texture'",
        ),
        (
            lambda t, m: [
                "explain",
                str(m),
                "--input",
                str(_breast_cancer_csv(t / "a.csv", 2)),
                "--target",
                "healthy",
            ],
            "unknown target class 'healthy' (classes: malignant, benign)",
        ),
        (lambda t, m: ["explain", str(t), "--input", "x.csv"], "is not a model directory"),
        (lambda t, m: ["explain", str(m), "--input", str(t / "none.csv")], "input file not found"),
        (lambda t, m: ["federated", "--partition", "dirichlet:0"], "config key 'partition'"),
        (
            lambda t, m: [
                "federated",
                "--dataset",
                "breast_cancer",
                "--clients",
                "400",
                "--partition",
                "dirichlet:0.1",
            ],
            "too many",
        ),
        (lambda t, m: ["federated", "--dataset", "breast_cancer", "--out", str(m)], "already holds a run"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path: Path, model_dir: Path, make_args, message: str):
    out = run_cli(*make_args(tmp_path, model_dir))
    assert out.returncode == 2, (out.stdout, out.stderr)
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], out.stderr
