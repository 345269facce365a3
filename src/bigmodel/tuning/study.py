"""Where a study lives and how it is opened: storage, sampler, pruner, and the checks that keep a
re-run from mixing two different searches.

Every `bigmodel tune` process that names the same study and storage works on the same study: that is
how work spreads over processes and machines (Optuna's model: the storage decides distribution).

- No ``--storage``: an Optuna journal file under ``$BIGMODEL_HOME/tune`` (safe for several processes
  on one machine; Optuna documents SQLite as unsafe for that). A path ending ``.journal`` or
  ``.log`` picks another journal file (e.g. on NFS, for machines that share it).
- ``postgresql://...`` (or any SQLAlchemy URL): Optuna's RDB storage, for workers on many machines.
  Each running trial beats every few seconds; a worker that dies mid-trial (SIGKILL, a lost machine)
  stops beating, and the next worker to look marks that trial FAIL and queues its parameters again.
  A journal study gets the same on one machine from the process ids its trials record.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.storages.journal import JournalFileBackend

from bigmodel.errors import BigModelError

Pruner = Literal["asha", "hyperband", "none"]
Sampler = Literal["tpe", "random"]

# seconds; BIGMODEL_TUNE_HEARTBEAT_S shortens both for the tests that kill a worker
HEARTBEAT_S = int(os.environ.get("BIGMODEL_TUNE_HEARTBEAT_S", "10"))
GRACE_S = 3 * HEARTBEAT_S
MAX_RETRY = 2  # a trial whose worker died is run again at most this often


def default_storage() -> str:
    from bigmodel.data.builtin import home

    return str(home() / "tune" / "studies.journal")


def is_journal(url: str) -> bool:
    return "://" not in url


def open_storage(url: str | None, *, create: bool = True) -> optuna.storages.BaseStorage:
    """The storage a URL names; an unreachable database is a one-line error, at once. ``create=False``
    (reading): a journal file that does not exist is an error, not a new empty one."""
    if url is not None and not url.strip():
        raise BigModelError("--storage is empty: name a journal file or a database URL")
    url = url or default_storage()
    if is_journal(url):
        path = Path(url).expanduser()
        if path.is_dir():
            raise BigModelError(
                f"--storage {path} is a folder; name a journal file (e.g. {path}/tune.journal)"
            )
        if not create and not path.exists():
            raise BigModelError(f"no study storage at {path} (bigmodel tune --storage {path} creates one)")
        _check_journal(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as err:
            raise BigModelError(f"cannot open journal storage {path}: {err}") from None
    from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

    from bigmodel.registry.db import normalize_url, without_password

    db_url = normalize_url(url)
    connect_args = {"connect_timeout": 5} if db_url.startswith("postgresql") else {}
    for attempt in range(5):
        try:
            with (
                warnings.catch_warnings()
            ):  # heartbeats are "experimental" in Optuna since 2.8; we rely on them
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    db_url,
                    engine_kwargs={"pool_pre_ping": True, "connect_args": connect_args},
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=MAX_RETRY
                    ),
                )
        except (IntegrityError, ProgrammingError):
            # workers started together on a new database race to create Optuna's tables; the loser
            # finds them made a moment later
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
        except (SQLAlchemyError, ImportError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BigModelError(f"cannot open study storage {without_password(db_url)}: {first}") from None
    raise AssertionError("unreachable")


def _check_journal(path: Path) -> None:
    """A file that exists must be an Optuna journal (JSON lines with an ``op_code``): never append a
    study to someone's notes."""
    import json

    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 20)
    except FileNotFoundError:
        return
    except OSError as err:
        raise BigModelError(f"cannot read journal storage {path}: {err}") from None
    if not first:
        return
    try:
        ok = "op_code" in json.loads(first)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise BigModelError(f"{path} is not an Optuna journal file (name a new file or an existing journal)")


def make_pruner(name: Pruner, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "asha":  # successive halving without waiting for a rung to fill: asynchronous
        # Rungs at 1, 3, 9 ... epochs, the top third promoted. Optuna's default factor, 4, spent a
        # little fewer epochs but lost the best trial (benchmarks: up to +110% best loss on digits).
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def make_sampler(name: Sampler, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Optuna's own default (v5, chosen by benchmark): multivariate for one objective, each parameter
    # on its own for several. A multivariate two-objective study on digits put 58 of 64 trials on
    # int8 32-wide students and topped out at 0.976; independent, its trials spread over every
    # kind of artifact and reached 0.981 (BENCHMARKS.md, tune).
    return optuna.samplers.TPESampler(seed=seed)


@dataclass(frozen=True)
class Identity:
    """What a study was created for; a re-run must agree, or it would mix two searches."""

    dataset: str
    family: str
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    space: str  # space.to_json

    def attrs(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "family": self.family,
            "objectives": list(self.objectives),
            "space": self.space,
        }


def open_study(
    name: str, storage: optuna.storages.BaseStorage, identity: Identity, sampler: Any, pruner: Any
) -> optuna.Study:
    """Create the study, or load it and check that it searches the same thing."""
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if name in existing:
        attrs, keys = existing[name].user_attrs, identity.attrs().keys()
        deadline = time.monotonic() + 10
        # created a moment ago: its creator writes them next, one key at a time
        while not all(k in attrs for k in keys) and time.monotonic() < deadline:
            time.sleep(0.2)
            attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
        for key, want in identity.attrs().items():
            have = attrs.get(key)
            if have != want:
                what = (
                    "a different search space"
                    if key == "space"
                    else f"different {key}"
                    if key.endswith("s")
                    else f"a different {key}"
                )
                raise BigModelError(
                    f"study {name!r} was created with {what} ({_short(have)}, now {_short(want)}); "
                    "it is left unchanged: use a new --study name for a new search"
                )
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        directions=[optuna.study.StudyDirection[d.upper()] for d in identity.directions],
        load_if_exists=True,  # two workers starting at once both end up on the one study
    )
    for key, value in identity.attrs().items():
        study.set_user_attr(key, value)
    # two workers that started together on a new name both get here; if they disagree, the one whose
    # identity did not stick refuses (a narrow window remains where both read before either writes)
    time.sleep(0.3)
    stuck = optuna.load_study(study_name=name, storage=storage).user_attrs
    if any(stuck.get(k) != v for k, v in identity.attrs().items()):
        raise BigModelError(
            f"study {name!r} was just created by another worker for a different search; use another --study name"
        )
    return study


def load(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        raise BigModelError(
            f"no study named {name!r} in this storage (studies: {', '.join(names) or 'none'})"
        ) from None


def _short(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "..."


RUNS_OWNER = "study.json"  # in a study's --out folder: which study its trial folders belong to


def check_runs(runs: Path, name: str, storage: optuna.storages.BaseStorage) -> None:
    """A folder of trial folders belongs to one study. The same study name in another storage would
    write its own trial-N over them (models lost): refused in one line, before the study is touched."""
    if runs.exists() and not runs.is_dir():
        raise BigModelError(f"--out {runs} is a file: give a folder for the trials' models")
    marker = runs / RUNS_OWNER
    try:
        owner = json.loads(marker.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as err:
        raise BigModelError(f"cannot read {marker}: {err}") from None
    owner = owner if isinstance(owner, dict) else {}
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if name in studies and studies[name].user_attrs.get("uid") == owner.get("uid"):
        return
    raise BigModelError(
        f"--out {runs} holds the trials of another study ({owner.get('study', '?')!r} in "
        f"{owner.get('storage', '?')}); give this one another --out or --study name, so that neither "
        "overwrites the other's models"
    )


def claim_runs(runs: Path, study: optuna.Study, storage: str | None) -> None:
    """Record in ``runs`` which study its trial folders belong to (``check_runs`` reads it)."""
    from bigmodel.fsutil import atomic_path

    uid = _uid(study)
    if (runs / RUNS_OWNER).exists():
        return
    where = storage or default_storage()
    if "://" in where:
        from bigmodel.registry.db import without_password

        where = without_password(where)
    with atomic_path(runs / RUNS_OWNER) as tmp:
        tmp.write_text(json.dumps({"study": study.study_name, "uid": uid, "storage": where}) + "\n")


def _uid(study: optuna.Study) -> str:
    """The study's own id: its name alone can be reused in another storage."""
    uid = study.user_attrs.get("uid")
    if not uid:
        study.set_user_attr("uid", uuid.uuid4().hex)
        # workers that start a study together each write one; all then read the one that stuck
        time.sleep(0.3)
        uid = optuna.load_study(study_name=study.study_name, storage=study._storage).user_attrs["uid"]
    return str(uid)


def live_running(study: optuna.Study) -> int:
    """RUNNING trials whose worker can be checked for life: all of them with a database (heartbeats),
    this machine's with a journal (process ids). Another machine's journal trial cannot be."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if not isinstance(study._storage, optuna.storages.JournalStorage):
        return len(running)
    host = socket.gethostname()
    return sum(1 for t in running if t.user_attrs.get("host") == host)


def mark_owner(trial: optuna.Trial) -> None:
    """Which process runs the trial, so a journal study can tell a dead worker's trial."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())


def fail_dead_workers(study: optuna.Study) -> None:
    """Journal storage has no heartbeat: RUNNING trials whose process on this machine is gone are
    marked FAIL and their parameters queued again (at most MAX_RETRY times; ``report.summary``
    lists them as retried_trials)."""
    if not isinstance(study._storage, optuna.storages.JournalStorage):
        optuna.storages.fail_stale_trials(study)  # RDB: by heartbeat
        return
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not isinstance(pid, int) or _alive(pid):
            continue
        try:
            study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        retries = int(t.user_attrs.get("retries", 0))
        if retries < MAX_RETRY:
            study.enqueue_trial(t.params, user_attrs={"retries": retries + 1, "retry_of": t.number})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
