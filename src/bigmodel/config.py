"""Typed, validated training config: data, model, optimizer and distribution in one object.

It loads from YAML; CLI flags and ``--set section.key=value`` override it. Unknown keys and bad
values are rejected with one line that names the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bigmodel.errors import BigModelError


class _Strict(BaseModel):
    # allow_inf_nan=False: an infinite lr or timeout passes gt=0 but is never meant
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(_Strict):
    dataset: str = "breast_cancer"  # a built-in name or a prepared dataset directory
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # used when a built-in is prepared
    loader_workers: int = Field(0, ge=0)  # DataLoader worker processes per rank
    shuffle_window: int = Field(65536, ge=1)  # rows shuffled together (at least: whole row groups)
    # consecutive stored rows shuffled as one unit; None: 4 when the stored rows are already in a
    # random order (the manifest's `shuffled`) and the split is more than one window, else 1
    # (see data/stream.py)
    shuffle_block: int | None = Field(None, ge=1)
    prefetch: int = Field(2, ge=0)  # windows loaded ahead, ready (0: no threads at all)
    load_threads: int = Field(2, ge=1)  # windows loaded at once, each in a thread


class ModelConfig(_Strict):
    name: Literal["mlp", "transformer"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [10, 10])  # mlp
    activation: Literal["relu", "gelu", "tanh", "sigmoid", "silu"] = "relu"  # mlp
    size: Literal["tiny", "mini", "small", "base", "large"] = "tiny"  # transformer (models/transformer.py)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    compile: bool = False
    init_from: str | None = None  # a model directory: start from its architecture and weights
    keep_sparsity: bool = False  # weights that start at zero stay zero (fine-tuning a pruned model)

    @model_validator(mode="after")
    def _positive_hidden(self) -> ModelConfig:
        if any(h <= 0 for h in self.hidden):
            raise ValueError(f"model.hidden sizes must be positive, got {self.hidden}")
        # a key that the chosen model does not read would be silently ignored; compared with the
        # defaults rather than "was it set", so a saved config.yaml (which lists every key) loads
        defaults = ModelConfig.model_fields
        unused = ["hidden", "activation"] if self.name == "transformer" else ["size"]
        if self.init_from:
            unused = ["hidden", "activation", "size"]
        for key in unused:
            if getattr(self, key) != defaults[key].get_default(call_default_factory=True):
                if self.init_from:
                    raise ValueError(
                        f"model.{key} does not apply with model.init_from (the starting model's shape is kept)"
                    )
                shape = "model.size" if self.name == "transformer" else "model.hidden and model.activation"
                raise ValueError(
                    f"model.{key} does not apply to model {self.name} (its shape is set by {shape})"
                )
        return self


# Learning rates that train our tabular and text models well when none is given. Full-batch GD takes
# few, averaged steps and needs a large one (wine trained to 0.56 accuracy at 1e-3, 0.97 at 0.1).
DEFAULT_LR = {"gd": 0.1, "sgd": 0.01, "adam": 1e-3, "adamw": 1e-3}


class OptimConfig(_Strict):
    name: Literal["gd", "sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0)  # default per optimizer: DEFAULT_LR
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: Literal["constant", "step", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    step_size: int = Field(1000, ge=1)  # steps between decays for schedule=step
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    grad_clip: float | None = Field(None, gt=0.0)  # max global L2 norm
    grad_accum: int = Field(1, ge=1)  # batches per optimizer step

    @model_validator(mode="before")
    @classmethod
    def _default_lr(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("lr") is None:
            name = data.get("name", "adam")
            data = {**data, "lr": DEFAULT_LR.get(name, 1e-3) if isinstance(name, str) else 1e-3}
        return data

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimConfig:
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("optim.nesterov needs optim.momentum > 0")
        if self.name in ("adam", "adamw") and self.momentum:  # torch's Adam has no momentum to set
            raise ValueError(f"optim.momentum applies to sgd and gd, not {self.name}")
        return self


class DistConfig(_Strict):
    workers: int = Field(1, ge=1)  # local worker processes (ignored under torchrun)
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    strategy: Literal["ddp", "fsdp"] = "ddp"  # fsdp: shard parameters, gradients and optimizer state
    mixed_precision: Literal["none", "bf16"] = "none"  # fsdp: bf16 parameters and compute, fp32 reductions
    activation_checkpointing: bool = False  # recompute each block's activations in backward
    max_restarts: int = Field(0, ge=0)  # elastic: restart all workers (from the last checkpoint) this often
    comm_hook: Literal["none", "fp16", "powersgd"] = "none"  # gradient compression for DDP
    powersgd_rank: int = Field(2, ge=1)
    local_sgd_period: int = Field(0, ge=0)  # >1: average parameters every N steps instead of gradients
    warmup_steps: int = Field(10, ge=0)  # exact all-reduce steps before powersgd or local SGD takes over
    threads: int = Field(0, ge=0)  # torch threads per worker; 0: OMP_NUM_THREADS, else cores / local workers
    timeout_s: float = Field(300.0, gt=0.0)  # a collective that waits this long fails instead of hanging

    @model_validator(mode="after")
    def _one_reduction(self) -> DistConfig:
        if self.local_sgd_period > 1 and self.comm_hook != "none":
            raise ValueError("dist.local_sgd_period and dist.comm_hook cannot be combined")
        if self.strategy == "fsdp" and (self.comm_hook != "none" or self.local_sgd_period > 1):
            raise ValueError(
                "dist.comm_hook and dist.local_sgd_period are DDP options; not with strategy fsdp"
            )
        if self.mixed_precision != "none" and self.strategy != "fsdp":
            raise ValueError("dist.mixed_precision needs dist.strategy=fsdp")
        return self


class DistillConfig(_Strict):
    """Knowledge distillation: learn from a teacher model's softened outputs as well as the labels."""

    teacher: str  # the teacher's model directory
    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.9, ge=0.0, le=1.0)  # weight of the teacher's soft targets (1 - alpha: labels)


class TrainConfig(_Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    dist: DistConfig = Field(default_factory=DistConfig)
    distill: DistillConfig | None = None
    batch_size: int = Field(32, ge=1)  # global: per-worker batch = batch_size / workers
    epochs: int = Field(100, ge=1)  # the cap when until_converged is on
    max_steps: int = Field(0, ge=0)  # stop after this many optimizer steps (0: no cap)
    until_converged: bool = False
    tol: float = Field(1e-4, ge=0.0)  # smallest val-loss improvement that counts
    patience: int = Field(10, ge=1)  # epochs without improvement before stopping
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    run_dir: str | None = None
    resume: bool = False
    checkpoint_every: int = Field(500, ge=0)  # steps; 0: only at the end
    keep_checkpoints: int = Field(2, ge=1)
    eval_batch_size: int = Field(4096, ge=1)
    eval_rows: int = Field(0, ge=0)  # validate on the first N rows of the val split (0: all of it)
    progress: bool = True
    loss_plot: bool = True  # loss.png beside the model (tune's trials skip it: ~0.25 s of a 2 s trial)

    @model_validator(mode="after")
    def _masks_need_whole_tensors(self) -> TrainConfig:
        if self.model.keep_sparsity and self.dist.strategy != "ddp":
            raise ValueError("model.keep_sparsity (fine-tuning a pruned model) needs dist.strategy=ddp")
        return self


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not isinstance(p, int)) or "config"


def _fields_of(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The allowed keys at a dotted location, for 'unknown key' messages."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _one_line(err: ValidationError, model: type[BaseModel]) -> str:
    e = err.errors()[0]
    where = _format_loc(e["loc"])
    if e["type"] == "extra_forbidden":
        allowed = ", ".join(_fields_of(model, e["loc"]))
        return f"unknown config key '{where}' (allowed: {allowed})"
    msg = e["msg"].removeprefix("Value error, ")
    if not e["loc"]:  # a check across keys (a model validator): its message names them
        return msg
    return f"config key '{where}': {msg} (got {e.get('input')!r})"


def validate(data: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig from a plain dict, turning pydantic errors into one-line BigModelErrors."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise BigModelError(_one_line(err, TrainConfig)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise BigModelError(f"config file not found: {p}") from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise BigModelError(f"cannot read config file {p}: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BigModelError(f"config file {p} must hold a mapping of keys, not {type(data).__name__}")
    return data


def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating sections on the way."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise BigModelError(f"config key '{dotted}': '{part}' is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_set(item: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (numbers, booleans, lists)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise BigModelError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def build(
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> TrainConfig:
    """base (e.g. a resumed run's config) < YAML file < flag overrides < ``--set`` items."""
    data: dict[str, Any] = dict(base or {})
    if yaml_path is not None:
        for key, value in _flatten(load_yaml(yaml_path)):
            set_key(data, key, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            set_key(data, key, value)
    for item in sets or []:
        set_key(data, *parse_set(item))
    return validate(data)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key in _SECTIONS:
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


_SECTIONS = {
    name
    for name, f in TrainConfig.model_fields.items()
    if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
}


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")
