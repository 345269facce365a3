from pathlib import Path

from bigmodel.config import TrainConfig
from bigmodel.training import evaluate, train


def test_a_builtin_named_again_is_split_as_the_model_was_trained(tmp_path: Path) -> None:
    """breast_cancer with --seed 3 is another split than with seed 0: scoring the seed-0 split would
    score the model on rows it trained on."""
    run = tmp_path / "r"
    cfg = {
        "data": {"dataset": "breast_cancer"},
        "seed": 3,
        "run_dir": str(run),
        "max_steps": 3,
        "progress": False,
    }
    train(TrainConfig.model_validate(cfg))
    recorded, named = evaluate(run), evaluate(run, "breast_cancer")
    assert named["rows"] == recorded["rows"] and named["metrics"] == recorded["metrics"]
