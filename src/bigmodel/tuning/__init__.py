"""Adaptive models: ``tune`` searches architecture, training and compression together with Optuna,
over as many processes and machines as share the study's storage; ``show`` reads a study back.

It sits above train, compress and registry (import contracts in pyproject.toml)."""

from __future__ import annotations

from typing import Any


def tune(base: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """See ``bigmodel.tuning.run.tune``."""
    from bigmodel.tuning.run import tune as run

    return run(base, **kwargs)


def show(study_name: str, **kwargs: Any) -> dict[str, Any]:
    """See ``bigmodel.tuning.run.show``."""
    from bigmodel.tuning.run import show as run

    return run(study_name, **kwargs)


__all__ = ["show", "tune"]
