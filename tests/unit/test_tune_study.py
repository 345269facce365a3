"""Opening a study that another worker is creating at that moment."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest

from bigmodel.errors import BigModelError
from bigmodel.tuning import study as st

IDENTITY = st.Identity(
    dataset="digits", family="mlp", objectives=("metric",), directions=("maximize",), space='{"lr": 1}'
)


def test_a_study_whose_creator_is_still_writing_its_identity_is_waited_for(tmp_path: Path):
    """Its creator writes the identity one key at a time: a worker that looks in between saw a
    study 'created with a different search space (None ...)' and quit (a PostgreSQL test, once)."""
    storage = st.open_storage(str(tmp_path / "s.journal"))
    created = optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    created.set_user_attr("dataset", "digits")  # the first key only, so far

    def finish() -> None:
        time.sleep(0.5)
        for key, value in IDENTITY.attrs().items():
            created.set_user_attr(key, value)

    writer = threading.Thread(target=finish)
    writer.start()
    study = st.open_study("shared", storage, IDENTITY, optuna.samplers.RandomSampler(), None)
    writer.join()
    assert study.user_attrs["space"] == IDENTITY.space


def test_a_study_of_another_search_is_still_refused(tmp_path: Path):
    storage = st.open_storage(str(tmp_path / "s.journal"))
    other = optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    for key, value in {**IDENTITY.attrs(), "space": '{"lr": 2}'}.items():
        other.set_user_attr(key, value)
    with pytest.raises(BigModelError, match="created with a different search space"):
        st.open_study("shared", storage, IDENTITY, optuna.samplers.RandomSampler(), None)
