"""Several ``bigmodel tune`` processes on one study: on a real PostgreSQL server (two workers, one
killed mid-trial and its trial retried by heartbeat) and on the default journal file (a dead worker's
trial found by its process id)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest

from tests.conftest import BIN, ROOT

ENV = {"BIGMODEL_TUNE_HEARTBEAT_S": "1"}  # beats every second, stale after 3
ARGS = ["tune", "--dataset", "breast_cancer", "--seed", "0", "--pruner", "none", "--json"]


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "bigmodel"), *ARGS, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENV, **(env or {})},
        cwd=str(ROOT),
    )


def _done(p: subprocess.Popen[str]) -> dict:
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_workers_on_the_default_journal_finish_exactly_the_trials_asked(tmp_path: Path):
    env = {"BIGMODEL_HOME": str(tmp_path / "home")}  # the default storage: a journal file there
    args = ("--study", "j", "--trials", "5", "--epochs", "2")
    a, b = _start(*args, env=env), _start(*args, env=env)
    first, second = _done(a), _done(b)
    for out in (first, second):  # each worker's summary is the whole study's
        assert out["counts"] == {"COMPLETE": 5}, out["counts"]
    assert {t["number"] for t in first["trials"]} == set(range(5))


def _storage(url: str) -> optuna.storages.BaseStorage:
    from bigmodel.tuning.study import open_storage

    return open_storage(url)


def test_two_workers_share_one_postgresql_study(tmp_path: Path, postgres_url: str):
    a = _start("--storage", postgres_url, "--study", "shared", "--trials", "4", "--epochs", "1")
    b = _start("--storage", postgres_url, "--study", "shared", "--trials", "4", "--epochs", "1")
    _done(a), _done(b)
    study = optuna.load_study(study_name="shared", storage=_storage(postgres_url))
    trials = study.get_trials()
    finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    # neither starts a fifth while the other's trial may finish the study (Optuna alone would)
    assert len(finished) == 4, [(t.number, t.state) for t in trials]
    assert len({t.number for t in trials}) == len(trials)
    pids = {t.user_attrs["pid"] for t in finished}
    assert len(pids) == 2  # both workers did some of the work


def _kill_mid_trial(storage: str, study: str, out: Path) -> int:
    """Start a worker on long trials, SIGKILL it while its first trial runs; that trial's number."""
    victim = _start(
        "--storage", storage, "--study", study, "--trials", "3", "--epochs", "400", "--out", str(out)
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            running = optuna.load_study(study_name=study, storage=_storage(storage)).get_trials(
                states=(optuna.trial.TrialState.RUNNING,)
            )
        except KeyError:  # not created yet
            running = []
        mine = [t for t in running if t.user_attrs.get("pid") == victim.pid and t.user_attrs.get("epochs")]
        if mine:
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
            return mine[0].number
        time.sleep(0.2)
    victim.kill()
    pytest.fail(f"no trial started: {victim.communicate()[1][-2000:]}")


@pytest.mark.slow  # ~45 s: each waits for a heartbeat grace period (make test-slow; CI runs it)
@pytest.mark.parametrize("where", ["postgresql", "journal"])
def test_a_killed_workers_trial_is_failed_and_retried(tmp_path: Path, request, where: str):
    storage = (
        request.getfixturevalue("postgres_url") if where == "postgresql" else str(tmp_path / "s.journal")
    )
    out = tmp_path / "runs"  # this study's own: a study 'k' of another test's storage has its default one
    killed = _kill_mid_trial(storage, "k", out)
    time.sleep(4)  # past the heartbeat's grace period (3 s)
    # the survivor trains short trials: the killed one needed only to be running
    survivor = _done(
        _start("--storage", storage, "--study", "k", "--trials", "3", "--epochs", "3", "--out", str(out))
    )
    study = optuna.load_study(study_name="k", storage=_storage(storage))
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[killed].state == optuna.trial.TrialState.FAIL
    retries = [
        t
        for t in by_number.values()
        if t.system_attrs.get("failed_trial") == killed or t.user_attrs.get("retry_of") == killed
    ]
    assert len(retries) == 1, [(t.number, t.state, t.user_attrs, t.system_attrs) for t in by_number.values()]
    assert retries[0].state == optuna.trial.TrialState.COMPLETE
    assert retries[0].params == by_number[killed].params  # the same trial, run again
    assert survivor["counts"].get("COMPLETE") == 3 and survivor["counts"].get("FAIL") == 1
    assert killed not in [t["number"] for t in survivor["trials"] if t["state"] == "COMPLETE"]
    assert survivor["retried_trials"] == [killed]  # in both storages: our journal check, RDB heartbeats


@pytest.mark.slow  # ~40 s: every trial starts two worker processes (make test-slow; CI runs it)
def test_trials_on_two_ddp_workers_are_pruned_by_their_rank_0(tmp_path: Path):
    """--workers 2: each trial trains in two worker processes; rank 0 reports every epoch to the
    study through its storage and both ranks stop where the pruner says."""
    from tests.conftest import run_cli

    storage = str(tmp_path / "ddp.journal")
    args = ["tune", "--dataset", "breast_cancer", "--seed", "0", "--epochs", "4", "--workers", "2"]
    r = run_cli(*args, "--trials", "5", "--storage", storage, "--study", "ddp", "--json", timeout=280)
    assert r.returncode == 0, r.stderr[-2000:]
    trials = json.loads(r.stdout.strip().splitlines()[-1])["trials"]
    assert len(trials) == 5 and {t["state"] for t in trials} <= {"COMPLETE", "PRUNED"}
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    assert pruned and all(t["epochs"] < 4 for t in pruned)
    study = optuna.load_study(study_name="ddp", storage=_storage(storage))
    for t in study.trials:  # every epoch a trial ran was reported, by one process (rank 0)
        assert sorted(t.intermediate_values) == list(range(1, t.user_attrs["epochs"] + 1))
