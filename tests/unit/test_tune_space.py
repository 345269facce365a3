"""The search space: parsing, one-line errors, how a trial's values become a training config."""

from __future__ import annotations

import optuna
import pytest

from bigmodel import config
from bigmodel.errors import BigModelError
from bigmodel.tuning import space as sp


def test_defaults_parse_and_sample_into_valid_configs():
    for family in ("mlp", "transformer"):
        space = sp.default(family, compression=True)
        assert "int8" in space
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(5):
            values = sp.suggest(study.ask(), space)
            base = {"data": {"dataset": "breast_cancer" if family == "mlp" else "text"}}
            cfg = config.validate(sp.apply(base, family, values))
            assert cfg.model.name == family
            assert cfg.optim.lr == pytest.approx(values["lr"])
            if family == "mlp":
                assert cfg.model.hidden == [values["width"]] * values["depth"]


def test_integer_ranges_are_integers_and_log_scale_is_kept():
    space = sp.parse("mlp", {"width": {"low": 8, "high": 64, "log": True}, "lr": {"low": 1e-4, "high": 1e-1}})
    dists = {}
    study = optuna.create_study()
    trial = study.ask()
    sp.suggest(trial, space)
    dists = trial.distributions
    assert isinstance(dists["width"], optuna.distributions.IntDistribution) and dists["width"].log
    assert isinstance(dists["lr"], optuna.distributions.FloatDistribution) and not dists["lr"].log


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"widht": {"low": 1, "high": 2}}, "unknown parameter 'widht'"),
        ({"width": {"low": 64, "high": 8}}, "width is an empty range (low 64 > high 8)"),
        ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, "log scale, so low must be > 0"),
        ({"activation": {"choices": []}}, "empty list of choices"),
        ({"width": [8, 64]}, "width must be {low, high[, log]} or {choices: [...]}"),
        ({"width": {"low": 8, "high": 64, "step": 2}}, "width.step"),
        ({"width": {"low": "eight", "high": 64}}, "width.low"),
        ({"width": {"low": 8.5, "high": 64}}, "width takes whole numbers"),
        ({"int8": {"low": 0, "high": 1}}, "int8 takes {choices: [false, true]}"),
        ({}, "non-empty mapping"),
        ({"size": {"choices": ["tiny"]}}, "unknown parameter 'size'"),  # a transformer knob on an MLP
    ],
)
def test_bad_spaces_are_one_line_errors(raw, words):
    with pytest.raises(BigModelError) as err:
        sp.parse("mlp", raw)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_canonical_form_ignores_order():
    a = sp.parse("mlp", {"width": {"low": 8, "high": 64}, "depth": {"low": 1, "high": 2}})
    b = sp.parse("mlp", {"depth": {"low": 1, "high": 2}, "width": {"low": 8, "high": 64}})
    c = sp.parse("mlp", {"depth": {"low": 1, "high": 3}, "width": {"low": 8, "high": 64}})
    assert sp.to_json(a) == sp.to_json(b) != sp.to_json(c)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"student_width": {"choices": [0, -4]}}, "student_width must be whole numbers >= 0"),
        ({"sparsity": {"low": 0.2, "high": 1.0}}, "sparsity must lie in [0, 1)"),
        ({"sparsity": {"choices": [0.0, 1.5]}}, "sparsity must lie in [0, 1)"),
        ({"int8": {"choices": [0, 1]}}, "int8 takes {choices: [false, true]}"),
        ({"batch_size": {"choices": [0, 32]}}, "batch_size=0 is not a valid setting"),
    ],
)
def test_compression_and_training_values_are_checked_before_any_study(tmp_path, raw, words):
    from bigmodel.tuning import tune

    storage = tmp_path / "never.journal"
    with pytest.raises(BigModelError) as err:
        tune({"data": {"dataset": "breast_cancer"}}, trials=1, raw_space=raw, storage=str(storage))
    assert words in str(err.value) and "\n" not in str(err.value)
    assert not storage.exists()  # refused before the storage was opened
