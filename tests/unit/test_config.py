from pathlib import Path

import pytest

from bigmodel import config
from bigmodel.errors import BigModelError


def test_defaults_are_the_reference_network():
    cfg = config.TrainConfig()
    assert cfg.model.hidden == [10, 10] and cfg.model.activation == "relu"
    assert cfg.optim.name == "adam" and cfg.dist.workers == 1


def test_precedence_yaml_then_flags_then_set(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 5\noptim: {name: sgd, lr: 0.5}\ndist: {workers: 2}\n")
    cfg = config.build(f, {"optim.lr": 0.1, "epochs": None}, ["optim.momentum=0.9", "model.hidden=[4, 3]"])
    assert cfg.epochs == 5 and cfg.optim.name == "sgd" and cfg.optim.lr == 0.1
    assert cfg.optim.momentum == 0.9 and cfg.model.hidden == [4, 3] and cfg.dist.workers == 2


def test_unknown_key_names_key_and_allowed(tmp_path: Path):
    with pytest.raises(BigModelError, match=r"unknown config key 'optim.lrr' \(allowed: name, lr,"):
        config.build(sets=["optim.lrr=0.1"])
    f = tmp_path / "c.yaml"
    f.write_text("bogus: 1\n")
    with pytest.raises(BigModelError, match="unknown config key 'bogus'"):
        config.build(f)


def test_bad_value_names_key_and_allowed_values():
    with pytest.raises(BigModelError, match=r"'optim.name'.*'gd', 'sgd', 'adam' or 'adamw'"):
        config.build(overrides={"optim.name": "lbfgs"})
    with pytest.raises(BigModelError, match=r"'dist.workers'.*greater than or equal to 1"):
        config.build(overrides={"dist.workers": 0})
    with pytest.raises(BigModelError, match=r"nesterov needs optim\.momentum"):
        config.build(sets=["optim.nesterov=true"])


def test_set_parses_yaml_values_and_rejects_garbage():
    assert config.parse_set("a.b=3") == ("a.b", 3)
    assert config.parse_set("x=[1,2]") == ("x", [1, 2])
    assert config.parse_set("x=true") == ("x", True)
    with pytest.raises(BigModelError, match="key=value"):
        config.parse_set("novalue")


def test_missing_and_malformed_yaml(tmp_path: Path):
    with pytest.raises(BigModelError, match="config file not found"):
        config.build(tmp_path / "nope.yaml")
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(BigModelError, match="must hold a mapping"):
        config.build(f)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optim.lr": float("inf")}, r"'optim.lr'.*finite"),
        ({"seed": -1}, r"'seed'.*greater than or equal to 0"),
        ({"optim.momentum": 0.9}, "optim.momentum applies to sgd and gd, not adam"),
        (
            {"model.init_from": "some/model", "model.hidden": [3]},
            "model.hidden does not apply with model.init_from",
        ),
    ],
)
def test_values_that_would_be_ignored_or_break_later_are_refused(overrides, message):
    with pytest.raises(BigModelError, match=message):
        config.build(overrides=overrides)


def test_a_yaml_key_given_twice_is_refused(tmp_path: Path):
    f = tmp_path / "twice.yaml"
    f.write_text("epochs: 2\nepochs: 3\n")
    with pytest.raises(
        BigModelError, match=r"cannot read config file .*twice.yaml: .*key 'epochs' appears twice"
    ):
        config.build(f)


def test_the_default_learning_rate_follows_the_optimizer():
    # full-batch GD at Adam's 1e-3 trained wine to 0.56 accuracy without a word
    assert config.build(None, {"optim.name": "gd", "optim.lr": None}, []).optim.lr == 0.1
    assert config.build(None, {}, ["optim.name=sgd"]).optim.lr == 0.01
    assert config.build(None, {}, []).optim.lr == 0.001
    assert config.build(None, {"optim.name": "gd", "optim.lr": 0.5}, []).optim.lr == 0.5
