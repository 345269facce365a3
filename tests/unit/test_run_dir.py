"""Who may write into a run directory: a new run only into a new or empty folder, or over what a
run of ours left when it stopped before its first checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from bigmodel.config import TrainConfig
from bigmodel.errors import BigModelError
from bigmodel.fsutil import fresh_dir, make_dir
from bigmodel.train.run_dir import CONFIG_FILE, prepare_run


def test_fresh_dir_takes_a_new_or_empty_folder_only(tmp_path: Path) -> None:
    assert fresh_dir(tmp_path / "a" / "b", "run directory").is_dir()
    assert fresh_dir(tmp_path / "a" / "b", "run directory").is_dir()  # still empty: fine
    (tmp_path / "a" / "b" / "notes.txt").write_text("mine")
    with pytest.raises(BigModelError, match=r"run directory .*/b is not empty \(notes.txt\)"):
        fresh_dir(tmp_path / "a" / "b", "run directory")
    assert (tmp_path / "a" / "b" / "notes.txt").read_text() == "mine"


def test_make_dir_names_the_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    for target in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(BigModelError, match=f"cannot create registry {target}: a file is in the way"):
            make_dir(target, "registry")


def test_a_run_that_stopped_before_its_first_checkpoint_is_replaced(tmp_path: Path) -> None:
    cfg = TrainConfig.model_validate({"data": {"dataset": "breast_cancer"}, "run_dir": str(tmp_path / "r")})
    run = Path(str(prepare_run(cfg).run_dir))
    # what a run killed in its first epoch leaves: config, metrics, a half-written checkpoint
    (run / "metrics.jsonl").write_text("{}\n")
    (run / "checkpoints" / ".step-000000010-00000.tmp").mkdir(parents=True)
    prepare_run(cfg)  # nothing to resume: a new run takes the folder
    assert sorted(p.name for p in run.iterdir()) == [CONFIG_FILE]
    (run / "checkpoints" / "step-000000010-00000").mkdir(parents=True)
    with pytest.raises(BigModelError, match="already holds a run; pass --resume"):
        prepare_run(cfg)
    with pytest.raises(
        BigModelError, match=r"--resume: no complete .* \(step-000000010-00000 failed the hash"
    ):
        prepare_run(cfg.model_copy(update={"resume": True}))  # its state and hashes are missing


def test_a_users_config_yaml_is_not_taken_for_a_leftover(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / CONFIG_FILE).write_text("epochs: 3\n")
    cfg = TrainConfig.model_validate({"data": {"dataset": "breast_cancer"}, "run_dir": str(tmp_path / "r")})
    with pytest.raises(BigModelError, match=r"is not empty \(config.yaml\)"):
        prepare_run(cfg)
    assert (tmp_path / "r" / CONFIG_FILE).read_text() == "epochs: 3\n"


def test_a_resume_that_changes_the_model_is_refused_before_the_config_is_rewritten(tmp_path: Path) -> None:
    from bigmodel.train import train

    run = tmp_path / "r"
    base = {"data": {"dataset": "breast_cancer"}, "run_dir": str(run), "max_steps": 3, "progress": False}
    train(TrainConfig.model_validate(base))
    before = (run / CONFIG_FILE).read_text()
    changed = TrainConfig.model_validate({**base, "resume": True, "model": {"hidden": [16]}})
    with pytest.raises(
        BigModelError, match=r"--resume: model.hidden is \[16\], but .* was trained with \[10, 10\]"
    ):
        prepare_run(changed)
    assert (run / CONFIG_FILE).read_text() == before  # a later plain --resume still works
    prepare_run(TrainConfig.model_validate({**base, "resume": True, "max_steps": 6}))
