"""``bigmodel compress distill``: a small student learns from a trained teacher (Hinton et al. 2015).

The student is an MLP of the given hidden sizes (``--hidden``) or, for a transformer language model
teacher, a transformer of a named size (``--size``) learning the teacher's softened next-byte
distribution at every position. It is trained by the normal trainer on the teacher's dataset (``--workers N`` trains it distributed) with the loss ``alpha * T^2 * KL(teacher_T ||
student_T) + (1 - alpha) * task loss`` (``distill`` in the training config; see
``tasks.distill_loss_sum``). Everything else (optimizer, batch size, activation) is the teacher's
recipe, without dropout.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bigmodel import artifacts
from bigmodel.compress.lm_measure import heldout, is_language_model
from bigmodel.compress.measure import profile_all, side_by_side
from bigmodel.compress.outdir import building, derived_meta, destination, open_source
from bigmodel.config import DistConfig, TrainConfig, validate
from bigmodel.errors import BigModelError
from bigmodel.models import SIZES, parse_architecture
from bigmodel.training import train


def student_config(
    teacher: artifacts.LoadedModel,
    hidden: list[int] | None,
    run_dir: Path,
    *,
    size: str | None = None,
    max_steps: int | None = None,
    temperature: float | None,
    alpha: float,
    epochs: int | None,
    workers: int,
    seed: int,
    lr: float | None = None,
    progress: bool = True,
) -> TrainConfig:
    """The teacher's training recipe for a student of ``hidden`` sizes (a transformer: of ``size``);
    ``temperature=None`` trains the same student on the labels alone (the baseline distillation has
    to beat)."""
    assert teacher.meta.dataset is not None
    base = dict(teacher.meta.config or {})
    cfg = validate(base) if base else TrainConfig()
    data = cfg.data.model_copy(update={"dataset": teacher.meta.dataset["path"]})
    # the teacher's activation, no dropout: a small student has no capacity to spare, and the
    # teacher's soft targets are its regulariser
    model = cfg.model.model_copy(
        update={
            **({"size": size} if size else {"hidden": hidden}),
            "dropout": 0.0,
            "init_from": None,
            "keep_sparsity": False,
        }
    )
    dist = DistConfig(workers=workers, threads=cfg.dist.threads, timeout_s=cfg.dist.timeout_s)  # DDP
    optim = cfg.optim.model_copy(update={"lr": lr or cfg.optim.lr})
    kd = (
        None
        if temperature is None
        else {"teacher": str(teacher.path), "temperature": temperature, "alpha": alpha}
    )
    update = {
        "data": data.model_dump(),
        "model": model.model_dump(),
        "dist": dist.model_dump(),
        "optim": optim.model_dump(),
        "distill": kd,
        "epochs": epochs or cfg.epochs,
        "max_steps": cfg.max_steps if max_steps is None else max_steps,
        "until_converged": False,
        "run_dir": str(run_dir),
        "resume": False,
        "checkpoint_every": 0,
        "seed": seed,
        "progress": progress,
    }
    return validate({**cfg.model_dump(mode="json"), **update})


def distill(
    teacher: str | Path,
    *,
    hidden: list[int] | None = None,
    size: str | None = None,
    max_steps: int | None = None,
    temperature: float = 4.0,
    alpha: float = 0.9,
    epochs: int | None = None,
    lr: float | None = None,
    workers: int = 1,
    seed: int = 0,
    out: str | Path | None = None,
    threads: int = 1,
    runs: int = 100,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a student of ``hidden`` sizes (an MLP teacher) or of a named ``size`` (a transformer
    language model teacher) from ``teacher`` into a new model directory; return the side-by-side
    report (original = teacher, compressed = student)."""
    if max_steps is not None and max_steps < 1:
        raise BigModelError(f"--max-steps must be at least 1, got {max_steps}")
    if temperature <= 0 or not 0.0 <= alpha <= 1.0:
        raise BigModelError(f"--temperature must be > 0 and --alpha in [0, 1], got {temperature}, {alpha}")
    src = open_source(teacher)
    if not src.meta.dataset:
        raise BigModelError(f"{teacher} records no dataset to distil on")
    arch = parse_architecture(src.meta.architecture)
    if not arch.supports.distill:
        raise BigModelError(f"{teacher} is a {arch.name} model; distill trains MLP and transformer students")
    hidden, size, suffix = _student_shape(arch.name, str(teacher), hidden, size)
    if is_language_model(src.meta):  # a dataset gone or without held-out text: one line, before training
        heldout(src.meta, teacher, rows=1)
    dst = destination(teacher, out, suffix)
    with tempfile.TemporaryDirectory(prefix="bigmodel-distill-") as work:
        cfg = student_config(
            src,
            hidden,
            Path(work) / "student",
            size=size,
            max_steps=max_steps,
            temperature=temperature,
            alpha=alpha,
            epochs=epochs,
            workers=workers,
            seed=seed,
            lr=lr,
            progress=progress,
        )
        summary = train(cfg)
        student = artifacts.load_model(summary["run_dir"])
        shape: dict[str, Any] = {"size": size} if size else {"hidden": hidden}
        params = {
            **shape,
            "temperature": temperature,
            "alpha": alpha,
            "epochs": cfg.epochs,
            "max_steps": cfg.max_steps,
            "steps": summary["steps"],
            "lr": cfg.optim.lr,
            "seed": seed,
        }
        meta = derived_meta(
            src,
            architecture=student.meta.architecture,
            method="distill",
            params=params,
            metrics=summary["metrics"],
        )
        meta.config = cfg.model_dump(mode="json")
        with building(dst) as tmp:
            artifacts.write_model_dir(tmp, student.module, meta)
    report = side_by_side(*profile_all([teacher, dst], threads=threads, runs=runs))
    return {**report, "model_dir": str(dst), "params": params}


def _student_shape(
    family: str, teacher: str, hidden: list[int] | None, size: str | None
) -> tuple[list[int] | None, str | None, str]:
    """(hidden, size, directory suffix) of the student; a shape flag of the other family is refused."""
    if family == "transformer":
        if hidden is not None:
            raise BigModelError(f"--hidden shapes an mlp student; {teacher} is a language model: use --size")
        if size is None:
            raise BigModelError(
                f"{teacher} is a language model: give the student's --size ({', '.join(SIZES)})"
            )
        if size not in SIZES:
            raise BigModelError(f"unknown --size {size!r} (known: {', '.join(SIZES)})")
        return None, size, f"student-{size}"
    if size is not None:
        raise BigModelError(
            f"--size shapes a transformer student; {teacher} is an {family} model: use --hidden"
        )
    if hidden is None:
        raise BigModelError(f"{teacher} is an {family} model: give the student's --hidden sizes, e.g. 32,16")
    if not hidden or any(h <= 0 for h in hidden):
        raise BigModelError(f"--hidden must be positive sizes, got {hidden}")
    return hidden, None, "student" + "-".join(map(str, hidden))
