"""``bigmodel tune`` as a user runs it: a study with ASHA that continues when re-run, ``tune show``,
a Pareto front registered with its lineage, and bad input refused in one line with the study untouched."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

FAST = ["--dataset", "breast_cancer", "--epochs", "3", "--seed", "0"]


def _json(r) -> dict:
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_study_prunes_continues_and_shows(tmp_path: Path):
    storage = str(tmp_path / "studies.journal")
    args = ["tune", *FAST, "--storage", storage, "--study", "bc", "--json"]
    first = _json(run_cli(*args, "--trials", "6"))
    states = [t["state"] for t in first["trials"]]
    assert len(states) == 6 and set(states) <= {"COMPLETE", "PRUNED"}
    assert "PRUNED" in states  # ASHA (the default) stopped some trials after their first epoch
    pruned = [t for t in first["trials"] if t["state"] == "PRUNED"]
    assert all(t["epochs"] < 3 for t in pruned)
    assert first["epochs_spent"] < 6 * 3
    best = first["best"]
    assert best["state"] == "COMPLETE" and 0.5 < best["metric"] <= 1.0
    assert (Path(best["model_dir"]) / "model.json").is_file()
    # trials train without a loss plot (~0.25 s each); the study draws its winner's at the end
    runs = Path(best["model_dir"]).parent
    assert [
        t["number"] for t in first["trials"] if (runs / f"trial-{t['number']}" / "loss.png").exists()
    ] == [best["number"]]

    again = _json(run_cli(*args, "--trials", "8"))  # the same command, more trials: it continues
    assert len(again["trials"]) == 8
    assert [t["params"] for t in again["trials"][:6]] == [t["params"] for t in first["trials"]]

    shown = _json(run_cli("tune", "show", "--study", "bc", "--storage", storage, "--json"))
    assert shown["trials"] == again["trials"] and shown["best"]["number"] == again["best"]["number"]
    table = run_cli("tune", "show", "--study", "bc", "--storage", storage)
    assert table.returncode == 0 and "best trial" in table.stdout


def test_pareto_front_is_plotted_and_registered_with_lineage(tmp_path: Path):
    from bigmodel import artifacts
    from bigmodel.registry import Registry

    registry = tmp_path / "registry"
    env = {"BIGMODEL_REGISTRY": str(registry)}
    cfg = tmp_path / "tune.yaml"  # architecture and every kind of compression, searched together
    cfg.write_text(
        "space:\n  width: {low: 8, high: 64, log: true}\n  lr: {low: 1.0e-3, high: 3.0e-2, log: true}\n"
        "  int8: {choices: [false, true]}\n  student_width: {choices: [0, 4]}\n"
    )
    args = ["tune", str(cfg), *FAST, "--storage", str(tmp_path / "s.journal"), "--study", "front"]
    args += ["--trials", "4", "--objective", "metric,latency,size", "--register", "bc-tuned", "--json"]
    out = _json(run_cli(*args, env=env))
    front = out["pareto"]
    assert front and all(t["state"] == "COMPLETE" for t in front)
    assert Path(out["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = Path(out["plot"]).parent  # each trial on the front gets its training's loss plot
    for t in out["trials"]:
        on_front = t["number"] in {w["number"] for w in front}
        assert (runs / f"trial-{t['number']}" / "loss.png").is_file() == on_front, t["number"]
    # seed 0 draws both settings of each compression knob; each trial's artifact is what it chose
    assert {t["params"]["int8"] for t in out["trials"]} == {True, False}
    assert {t["params"]["student_width"] for t in out["trials"]} == {0, 4}
    for t in out["trials"]:
        assert t["latency"] > 0 and t["size"] > 0
        lineage = artifacts.read_meta(t["model_dir"]).lineage  # the artifact's last step
        want = "quantize" if t["params"]["int8"] else "distill" if t["params"]["student_width"] else "train"
        assert lineage.method == want, (t["params"], t["model_dir"])
        chain = [t["model_dir"], (lineage.parent or {}).get("path", "")]  # int8 of the student, if both
        assert any(p.endswith("-distilled") for p in chain) == bool(t["params"]["student_width"])
    reg = Registry(registry)
    assert [r["trial"] for r in out["registered"]] == [t["number"] for t in front]
    for r in out["registered"]:
        meta = artifacts.read_meta(reg.resolve(f"bc-tuned:{r['version']}"))
        tune = meta.model_extra["tune"]
        assert tune["study"] == "front" and tune["trial"] == r["trial"]
        assert tune["params"] == next(t["params"] for t in front if t["number"] == r["trial"])
    table = run_cli("tune", "show", "--study", "front", "--storage", str(tmp_path / "s.journal"))
    assert table.returncode == 0 and "Pareto front" in table.stdout and "pareto.png" in table.stdout
    # the same command again: no new trial, and the same winners are not registered twice
    again = _json(run_cli(*args, env=env))
    assert [(r["version"], r["new"]) for r in again["registered"]] == [
        (r["version"], False) for r in out["registered"]
    ]
    assert len(reg.versions("bc-tuned")) == len(out["registered"])


def test_bad_input_is_one_line_and_leaves_the_study_untouched(tmp_path: Path):
    storage = str(tmp_path / "s.journal")
    base = ["tune", *FAST, "--storage", storage, "--study", "s"]
    _json(run_cli(*base, "--trials", "2", "--json"))
    before = _json(run_cli("tune", "show", "--study", "s", "--storage", storage, "--json"))
    assert before["retried_trials"] == [] and before["counts"]  # the keys tune --json has

    def refused(*args: str, words: str, env: dict[str, str] | None = None, tune: bool = False) -> None:
        r = run_cli(*(("tune", *args) if tune else args), env=env)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert words in r.stderr, (words, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

    cfg = tmp_path / "space.yaml"
    cfg.write_text("space:\n  widht: {low: 8, high: 64}\n")
    refused(*base, str(cfg), "--trials", "2", words="unknown parameter 'widht'")
    cfg.write_text("space:\n  width: {low: 64, high: 8}\n")
    refused(*base, str(cfg), "--trials", "2", words="empty range")
    cfg.write_text("space:\n  width: {low: 8, high: 100000000}\n  depth: {low: 1, high: 4}\n")
    refused(*base, str(cfg), "--trials", "2", words="lower width or depth")
    cfg.write_text("space:\n  activation: {choices: [relu, swish]}\n")
    refused(*base, str(cfg), "--trials", "2", words="activation='swish' is not a valid setting")
    cfg.write_text("space:\n  width: {low: 8, high: 64}\n")  # valid, but not the study's space
    refused(*base, str(cfg), "--trials", "4", words="study 's' was created with a different search space")
    refused(*base, "--trials", "0", words="--trials must be at least 1")
    refused(
        *base, "--trials", "3", "--objective", "metric,latency", "--pruner", "asha", words="single-objective"
    )
    refused(
        *base, "--trials", "3", "--objective", "latency", words="--objective must start with metric or loss"
    )
    t0 = time.monotonic()
    refused(
        "tune",
        *FAST,
        "--trials",
        "2",
        "--storage",
        "postgresql://nobody@127.0.0.1:1/none",
        words="cannot open study storage postgresql+psycopg://nobody@127.0.0.1:1/none",
    )
    assert time.monotonic() - t0 < 30
    refused("tune", "show", "--study", "nope", "--storage", storage, words="no study named 'nope'")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    refused(*FAST, "--trials", "1", "--storage", str(notes), words="is not an Optuna journal file", tune=True)
    assert notes.read_text() == "my notes\n"  # never appended to
    refused("tune", "--dataset", str(tmp_path / "nope"), "--trials", "1", "--storage", storage, words="nope")
    refused(*base, "--trials", "2", "--seed", "-1", words="--seed must be in [0, 2**32)")
    refused("tune", *FAST, "--trials", "1", "--storage", storage, "--study", "..", words="bad study name")
    refused(
        "tune", "--dataset", "digits", "--trials", "1", "--epochs", "0", "--storage", storage, words="epochs"
    )
    # a family that cannot learn the dataset: refused before a study or its folder exists
    lm_out = tmp_path / "lm-runs"
    refused(
        *base[:-1],
        "lm",
        "--model",
        "transformer",
        "--trials",
        "1",
        "--out",
        str(lm_out),
        words="text dataset",
    )
    refused("tune", "show", "--study", "lm", "--storage", storage, words="no study named 'lm'")
    assert not lm_out.exists()
    refused(*base[:-1], "new", "--trials", "1", "--out", str(notes), words=f"--out {notes} is a file")
    from bigmodel.data.builtin import resolve

    damaged = tmp_path / "damaged"  # breast_cancer with a manifest that no longer matches its shards
    shutil.copytree(resolve("breast_cancer")[0], damaged)
    m = json.loads((damaged / "manifest.json").read_text())
    m["splits"]["train"]["rows"] += 1
    (damaged / "manifest.json").write_text(json.dumps(m))
    refused(
        "tune",
        "--dataset",
        str(damaged),
        "--trials",
        "1",
        "--storage",
        storage,
        "--study",
        "dmg",
        words="rows",
    )
    refused("tune", "show", "--study", "dmg", "--storage", storage, words="no study named 'dmg'")
    missing = tmp_path / "new" / "show.journal"
    refused("tune", "show", "--study", "s", "--storage", str(missing), words="no study storage at")
    assert not missing.parent.exists()
    after = _json(run_cli("tune", "show", "--study", "s", "--storage", storage, "--json"))
    assert after["trials"] == before["trials"]


@pytest.mark.parametrize("objective", ["loss"])
def test_loss_objective_with_random_search(tmp_path: Path, objective: str):
    out = _json(
        run_cli(
            "tune",
            *FAST,
            "--storage",
            str(tmp_path / "s.journal"),
            "--trials",
            "3",
            "--sampler",
            "random",
            "--pruner",
            "none",
            "--objective",
            objective,
            "--json",
        )
    )
    assert out["directions"] == ["minimize"]
    assert all(t["state"] == "COMPLETE" and t["epochs"] == 3 for t in out["trials"])  # no pruner
    assert out["best"]["loss"] == min(t["loss"] for t in out["trials"])


def test_a_transformer_lm_study_with_int8_in_the_front(tmp_path: Path):
    """The transformer family end to end: a byte-level text dataset, trials of real LM training
    (bits per byte, lower is better) with the int8 choice, a two-objective front."""
    text = tmp_path / "text"
    made = run_cli("data", "generate", "text", str(text), "--bytes", "30000", "--context", "32", "--json")
    assert made.returncode == 0, made.stderr
    cfg = tmp_path / "lm.yaml"
    cfg.write_text(
        "max_steps: 6\nspace:\n  lr: {low: 1.0e-3, high: 3.0e-3, log: true}\n  int8: {choices: [false, true]}\n"
    )
    out = _json(
        run_cli(
            "tune",
            str(cfg),
            "--dataset",
            str(text),
            "--model",
            "transformer",
            "--epochs",
            "1",
            "--seed",
            "0",
            "--trials",
            "3",
            "--objective",
            "metric,latency",
            "--storage",
            str(tmp_path / "lm.journal"),
            "--study",
            "lm",
            "--json",
            timeout=600,
        )
    )
    done = [t for t in out["trials"] if t["state"] == "COMPLETE"]
    assert len(done) == 3 and all(0 < t["metric"] < 8.5 for t in done)  # bits per byte: a byte is 8 bits
    assert out["pareto"] and all(t["latency"] > 0 for t in done)
    assert Path(out["plot"]).is_file()


def test_a_study_in_another_storage_cannot_overwrite_a_studys_trials(tmp_path: Path):
    out = tmp_path / "runs"

    def files() -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    mine = ["tune", *FAST, "--trials", "2", "--study", "m", "--out", str(out)]
    _json(run_cli(*mine, "--storage", str(tmp_path / "a.journal"), "--json"))
    before = files()
    other = tmp_path / "b.journal"
    r = run_cli(*mine, "--storage", str(other))  # the same name in another storage, the same --out
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"--out {out} holds the trials of another study ('m' in {tmp_path / 'a.journal'})" in r.stderr
    assert files() == before  # nothing overwritten
    assert not other.exists() or other.stat().st_size == 0  # and no study made there
    # the study's own re-run is welcome, and says so when it has nothing left to run
    again = run_cli(*mine, "--storage", str(tmp_path / "a.journal"))
    assert (
        again.returncode == 0
        and "study 'm' already holds 2 finished trials (--trials 2): none run" in again.stderr
    )
