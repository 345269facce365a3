"""Sharded training (FSDP2) on real gloo processes: it must train the same model as DDP, and its
checkpoints must resume on another number of workers and consolidate into one model directory."""

import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from bigmodel import TrainConfig, load_model, train
from bigmodel.data.text import generate_text
from bigmodel.training import consolidate
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fsdp") / "text"
    generate_text(root, n_bytes=120_000, context=32, seed=0)
    return root


def _train(text: Path, run_dir: Path, **dist) -> dict:
    cfg = {
        "data": {"dataset": str(text)},
        "model": {"name": "transformer", "size": "tiny"},  # no dropout: masks depend on the world size
        "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.01, "grad_clip": 1.0},
        "batch_size": 16,
        "epochs": 1,
        "max_steps": 20,
        "checkpoint_every": 10,
        "keep_checkpoints": 5,
        "eval_rows": 256,
        "run_dir": str(run_dir),
        "progress": False,
        "dist": dist,
    }
    return train(TrainConfig.model_validate(cfg))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def fsdp_run(text: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("fsdp-run") / "run"
    return run, _train(text, run, workers=2, strategy="fsdp")


def test_fsdp_trains_the_same_weights_as_ddp(text: Path, tmp_path: Path, fsdp_run: tuple[Path, dict]):
    run, out = fsdp_run
    ddp = _train(text, tmp_path / "ddp", workers=2, strategy="ddp")
    assert out["steps"] == ddp["steps"] == 20 and out["strategy"] == "fsdp"
    w_fsdp = load_file(str(run / "model.safetensors"))
    assert _max_diff(w_fsdp, load_file(str(tmp_path / "ddp" / "model.safetensors"))) <= 1e-5
    assert out["metrics"]["loss"] < 4.5  # uniform over 256 bytes is 5.55 nats


def test_checkpoint_saved_on_two_workers_resumes_on_one(fsdp_run: tuple[Path, dict], tmp_path: Path):
    run, _ = fsdp_run
    shards = sorted((run / "checkpoints").glob("step-000000010-*/shards/*.safetensors"))
    assert len(shards) == 2  # each worker wrote its own pieces
    # Resume a copy of the run from its step-10 checkpoint with 1 worker instead of 2.
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    for ck in (copy / "checkpoints").glob("step-*"):
        if not ck.name.startswith("step-000000010-"):
            shutil.rmtree(ck)
    (copy / "model.json").unlink()
    cfg = TrainConfig.model_validate(
        {**_config(run), "run_dir": str(copy), "resume": True, "dist": {"workers": 1, "strategy": "fsdp"}}
    )
    out = train(cfg)
    assert out["steps"] == 20 and out["world_size"] == 1
    a, b = load_file(str(run / "model.safetensors")), load_file(str(copy / "model.safetensors"))
    assert _max_diff(a, b) <= 1e-5


def test_consolidate_a_sharded_checkpoint_into_a_model_directory(fsdp_run: tuple[Path, dict], tmp_path: Path):
    run, out = fsdp_run
    dst = tmp_path / "model"
    result = consolidate(run, dst)
    assert result["step"] == 20 and result["saved_by_workers"] == 2
    loaded = load_model(dst)  # hash-verified model directory, as compression/registry/serving load it
    assert loaded.meta.lineage.method == "consolidate" and loaded.meta.architecture["name"] == "transformer"
    a = {k: v for k, v in loaded.module.state_dict().items()}
    assert _max_diff(a, load_file(str(run / "model.safetensors"))) == 0.0
    assert result["metrics"]["loss"] == pytest.approx(out["metrics"]["loss"], rel=1e-5)
    again = run_cli("consolidate", str(run), str(dst), "--json")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_bf16_mixed_precision_and_activation_checkpointing_cli(text: Path, tmp_path: Path):
    out = run_cli(
        "train", "--dataset", str(text), "--model", "transformer", "--size", "tiny", "--strategy", "fsdp",
        "--batch-size", "16", "--max-steps", "20", "--lr", "3e-3", "--run-dir", str(tmp_path / "r"),
        "--set", "dist.mixed_precision=bf16", "--set", "dist.activation_checkpointing=true",
        "--set", "eval_rows=256", "--no-progress", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["strategy"] == "fsdp" and result["steps"] == 20
    assert result["metrics"]["loss"] < 4.5
    assert load_model(tmp_path / "r").meta.config["dist"]["mixed_precision"] == "bf16"


def _config(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())
