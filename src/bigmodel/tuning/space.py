"""The search space of ``bigmodel tune``: which knobs a trial may turn, and over what range.

A space is a mapping from a parameter name to a range (``{low, high[, log]}``, integers when both
ends are integers) or a list of choices (``{choices: [...]}``). The names are fixed per model family,
because each one means a concrete change to the training config or to the compressed artifact
(``apply``). A YAML file gives it under ``space:`` beside an ordinary training config::

    model: {name: mlp}
    epochs: 12
    space:
      width: {low: 16, high: 512, log: true}
      depth: {low: 1, high: 3}
      lr: {low: 1.0e-4, high: 1.0e-1, log: true}
      int8: {choices: [false, true]}
      student_width: {choices: [0, 16]}   # 0: keep the trained model, else distil it
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from bigmodel.errors import BigModelError

Family = Literal["mlp", "transformer"]

# name -> what it sets, for the messages and the README; the order is the table's
KNOBS: dict[Family, dict[str, str]] = {
    "mlp": {
        "depth": "hidden layers (model.hidden = [width] * depth)",
        "width": "units per hidden layer",
        "activation": "model.activation (relu, gelu, tanh, sigmoid, silu)",
        "dropout": "model.dropout",
        "optimizer": "optim.name (gd, sgd, adam, adamw)",
        "lr": "optim.lr",
        "batch_size": "batch_size",
        "weight_decay": "optim.weight_decay",
        "int8": "quantize the trained model to int8 (ONNX Runtime, accuracy-aware)",
        "sparsity": "prune this fraction of the weights (LAMP, then 1 epoch of fine-tuning)",
        "student_width": "distil the trained model into a one-layer student this wide (0: no)",
    },
    "transformer": {
        "size": "model.size (tiny, mini, small, base, large)",
        "dropout": "model.dropout",
        "optimizer": "optim.name (sgd, adam, adamw)",
        "lr": "optim.lr",
        "batch_size": "batch_size",
        "weight_decay": "optim.weight_decay",
        "int8": "quantize the trained model's Linear layers to int8 (PyTorch, FBGEMM)",
    },
}

COMPRESSION = ("int8", "sparsity", "student_width")
INTEGER = ("depth", "width", "batch_size", "student_width")  # whole numbers only
BOOLEAN = ("int8",)

# what `bigmodel tune` searches when the config names no space
DEFAULTS: dict[Family, dict[str, dict[str, Any]]] = {
    "mlp": {
        "depth": {"low": 1, "high": 3},
        "width": {"low": 16, "high": 256, "log": True},
        "activation": {"choices": ["relu", "gelu", "tanh"]},
        "dropout": {"low": 0.0, "high": 0.3},
        "lr": {"low": 1e-4, "high": 3e-2, "log": True},
        "batch_size": {"choices": [32, 64, 128, 256]},
        "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    },
    "transformer": {
        "size": {"choices": ["tiny", "mini"]},
        "dropout": {"low": 0.0, "high": 0.2},
        "lr": {"low": 1e-4, "high": 3e-3, "log": True},
        "batch_size": {"choices": [16, 32, 64]},
        "weight_decay": {"low": 1e-6, "high": 1e-1, "log": True},
    },
}
# in a multi-objective search, compression is part of the question by default
DEFAULT_COMPRESSION: dict[Family, dict[str, dict[str, Any]]] = {
    "mlp": {"int8": {"choices": [False, True]}},
    "transformer": {"int8": {"choices": [False, True]}},
}


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    low: int | float
    high: int | float
    log: bool = False


class Choices(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    choices: list[str | int | float | bool]


Param = Range | Choices


def parse(family: Family, raw: Any, *, where: str = "the search space") -> dict[str, Param]:
    """Check a space (a mapping from the YAML or the defaults) for ``family``; one-line errors name
    the parameter and what is wrong with it."""
    if not isinstance(raw, dict) or not raw:
        raise BigModelError(f"{where} must be a non-empty mapping of parameter -> range or choices")
    known = KNOBS[family]
    space: dict[str, Param] = {}
    for name, spec in raw.items():
        if name not in known:
            raise BigModelError(
                f"unknown parameter {name!r} in {where} for a {family} model (known: {', '.join(known)})"
            )
        if not isinstance(spec, dict):
            raise BigModelError(
                f"{where}: {name} must be {{low, high[, log]}} or {{choices: [...]}}, got {spec!r}"
            )
        # YAML 1.1 reads 1e-4 (no dot) as text: take it as the number its writer meant
        spec = {k: _number(v) if k in ("low", "high") else v for k, v in spec.items()}
        try:
            p: Param = Choices(**spec) if "choices" in spec else Range(**spec)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise BigModelError(f"{where}: {name}.{loc}: {first['msg']}") from None
        if isinstance(p, Choices) and not p.choices:
            raise BigModelError(f"{where}: {name} has an empty list of choices")
        if isinstance(p, Range):
            if p.low > p.high:
                raise BigModelError(f"{where}: {name} is an empty range (low {p.low} > high {p.high})")
            if p.log and p.low <= 0:
                raise BigModelError(
                    f"{where}: {name} is searched on a log scale, so low must be > 0 (got {p.low})"
                )
        values = p.choices if isinstance(p, Choices) else [p.low, p.high]
        if name in BOOLEAN and not (isinstance(p, Choices) and all(isinstance(v, bool) for v in values)):
            raise BigModelError(f"{where}: {name} takes {{choices: [false, true]}}, got {spec}")
        if name in INTEGER and not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise BigModelError(f"{where}: {name} takes whole numbers, got {values}")
        space[name] = p
    return space


def _number(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def default(family: Family, *, compression: bool) -> dict[str, Param]:
    return parse(family, {**DEFAULTS[family], **(DEFAULT_COMPRESSION[family] if compression else {})})


def to_json(space: dict[str, Param]) -> str:
    """A canonical form, kept in the study, so a changed space is recognised on the next run."""
    return json.dumps({k: v.model_dump() for k, v in sorted(space.items())}, sort_keys=True)


def suggest(trial: Any, space: dict[str, Param]) -> dict[str, Any]:
    """The trial's values: Optuna's ``suggest_*`` for each parameter, in the space's order."""
    values: dict[str, Any] = {}
    for name, p in space.items():
        if isinstance(p, Choices):
            values[name] = trial.suggest_categorical(name, p.choices)
        elif isinstance(p.low, int) and isinstance(p.high, int) and not isinstance(p.low, bool):
            values[name] = trial.suggest_int(name, p.low, p.high, log=p.log)
        else:
            values[name] = trial.suggest_float(name, float(p.low), float(p.high), log=p.log)
    return values


def apply(base: dict[str, Any], family: Family, values: dict[str, Any]) -> dict[str, Any]:
    """The training config (as a dict) a trial runs: ``base`` with the trial's training knobs set.
    Compression knobs (student_width, sparsity, int8) act on the trained model, after training."""
    cfg = json.loads(json.dumps(base))  # a deep copy
    model, optim = cfg.setdefault("model", {}), cfg.setdefault("optim", {})
    model["name"] = family
    if family == "mlp" and ("depth" in values or "width" in values):
        hidden = model.get("hidden") or [10, 10]
        depth, width = values.get("depth", len(hidden)), values.get("width", max(hidden))
        model["hidden"] = [int(width)] * int(depth)
    for name, key, section in (
        ("activation", "activation", model),
        ("dropout", "dropout", model),
        ("size", "size", model),
        ("optimizer", "name", optim),
        ("lr", "lr", optim),
        ("weight_decay", "weight_decay", optim),
    ):
        if name in values:
            section[key] = values[name]
    if "batch_size" in values:
        cfg["batch_size"] = int(values["batch_size"])
    return cfg
