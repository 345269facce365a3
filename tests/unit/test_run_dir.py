"""Who may write into a run directory: a new run only into a new or empty folder, or over what a
run of ours left when it stopped before its first checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from bigmodel.config import TrainConfig
from bigmodel.errors import BigModelError
from bigmodel.fsutil import fresh_dir, make_dir
from bigmodel.training.run_dir import CONFIG_FILE, prepare_run


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
    run = Path(str(prepare_run(cfg).cfg.run_dir))
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
    from bigmodel.training import train

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


def test_a_resume_keeps_batch_size_seed_and_optimizer_settings_and_its_rows(
    tmp_path: Path, monkeypatch
) -> None:
    from bigmodel.data import generate_synthetic
    from bigmodel.training import train

    data, run = tmp_path / "d", tmp_path / "r"
    generate_synthetic(data, rows=400, features=4, seed=0)
    base = {"data": {"dataset": str(data)}, "run_dir": str(run), "max_steps": 3, "progress": False}
    train(TrainConfig.model_validate(base))
    before = (run / CONFIG_FILE).read_text()
    for change, message in (
        ({"optim": {"lr": 0.5}}, r"optim.lr is 0.5, but .* was trained with 0.001"),
        ({"batch_size": 64}, r"batch_size is 64, but .* was trained with 32"),
        ({"seed": 1}, r"seed is 1, but .* was trained with 0"),
        ({"model": {"dropout": 0.5}}, r"model.dropout is 0.5, but .* was trained with 0.0"),
    ):
        with pytest.raises(BigModelError, match=message):
            prepare_run(TrainConfig.model_validate({**base, **change, "resume": True}))
    assert (run / CONFIG_FILE).read_text() == before
    # the same folder, other rows: the checkpoint's data position would point into another dataset
    import shutil

    shutil.rmtree(data)
    generate_synthetic(data, rows=400, features=4, seed=1)
    with pytest.raises(BigModelError, match=r"--resume: the rows of .* changed since .*'s checkpoint"):
        prepare_run(TrainConfig.model_validate({**base, "resume": True}))
    # the same rows, read in another order (a bigmodel that shuffles differently): its mid-epoch
    # position (batch 3 of epoch 0) would point at other rows
    shutil.rmtree(data)
    generate_synthetic(data, rows=400, features=4, seed=0)
    prepare_run(TrainConfig.model_validate({**base, "resume": True}))  # the same order: fine
    monkeypatch.setattr("bigmodel.data.stream.ORDER_VERSION", 3)
    with pytest.raises(BigModelError, match=r"stopped in the middle of epoch 0 with rows in another order"):
        prepare_run(TrainConfig.model_validate({**base, "resume": True}))


def test_a_warmup_longer_than_the_run_is_refused(tmp_path: Path) -> None:
    cfg = TrainConfig.model_validate(
        {
            "data": {"dataset": "breast_cancer"},
            "run_dir": str(tmp_path / "r"),
            "epochs": 2,
            "optim": {"warmup_steps": 500},
        }
    )
    with pytest.raises(
        BigModelError, match=r"optim.warmup_steps 500 is not below this run's 30 optimizer steps"
    ):
        prepare_run(cfg)


def test_a_diverging_run_stops_with_one_line_instead_of_saving_nan(tmp_path: Path) -> None:
    from bigmodel.data import generate_synthetic
    from bigmodel.training import train

    generate_synthetic(tmp_path / "d", rows=400, features=4, seed=0)
    cfg = TrainConfig.model_validate(
        {
            "data": {"dataset": str(tmp_path / "d")},
            "run_dir": str(tmp_path / "r"),
            "optim": {"name": "sgd", "lr": 1e30},
            "epochs": 3,
            "progress": False,
        }
    )
    with pytest.raises(
        BigModelError, match=r"training diverged in epoch 1 \(step 10\): the training loss is nan"
    ):
        train(cfg)
    assert not (tmp_path / "r" / "model.json").exists()


def test_a_checkpoint_of_other_shapes_is_one_line(tmp_path: Path) -> None:
    from bigmodel.training import consolidate, train

    run = tmp_path / "r"
    train(
        TrainConfig.model_validate(
            {"data": {"dataset": "breast_cancer"}, "run_dir": str(run), "max_steps": 3, "progress": False}
        )
    )
    cfg = (run / CONFIG_FILE).read_text()
    (run / CONFIG_FILE).write_text(cfg.replace("  - 10\n  - 10\n", "  - 12\n  - 10\n", 1))  # edited by hand
    with pytest.raises(BigModelError, match=r"does not fit this model: Size mismatch between saved"):
        consolidate(run, tmp_path / "out")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="NCCL may work here")
def test_nccl_without_gpus_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    cfg = TrainConfig.model_validate(
        {"data": {"dataset": "breast_cancer"}, "run_dir": str(tmp_path / "r"), "dist": {"backend": "nccl"}}
    )
    with pytest.raises(BigModelError, match=r"dist\.backend nccl needs CUDA GPUs"):
        prepare_run(cfg)
    assert not (tmp_path / "r").exists()


def test_a_run_started_from_a_model_consolidates_with_that_models_shape(tmp_path: Path) -> None:
    from bigmodel.training import consolidate, train

    base = {"data": {"dataset": "breast_cancer"}, "max_steps": 3, "progress": False}
    train(TrainConfig.model_validate({**base, "model": {"hidden": [4]}, "run_dir": str(tmp_path / "start")}))
    run = tmp_path / "r"
    train(
        TrainConfig.model_validate(
            {**base, "model": {"init_from": str(tmp_path / "start")}, "run_dir": str(run)}
        )
    )
    out = consolidate(run, tmp_path / "out")  # rebuilt [10, 10] before: "Size mismatch"
    assert out["model_dir"] == str(tmp_path / "out")
