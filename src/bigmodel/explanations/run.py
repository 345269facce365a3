"""``explain(model, input)``: why a model answered as it did, for every row of a CSV file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bigmodel.errors import BigModelError


def explain(
    model: str | Path,
    input: str | Path,
    *,
    method: str = "integrated_gradients",
    target: Any = None,
    out: str | Path | None = None,
    rows: int | None = None,
    n_steps: int = 64,
    registry: str | None = None,
) -> dict[str, Any]:
    """Per-feature attributions of ``model`` (a model directory, or a registry reference
    ``NAME``, ``NAME@ALIAS``, ``NAME:VERSION`` in ``registry``) for the rows of ``input`` (CSV or
    Parquet with the model's feature columns; other columns, e.g. the label, are ignored).

    ``method``: integrated_gradients (default; with ``convergence_delta`` per row), gradient_shap,
    feature_ablation. ``target``: the class to explain (label or code; default: each row's
    prediction). ``rows``: explain only the first N rows. ``out``: also draw a bar chart PNG of
    the top features there (an existing file is never overwritten). See ``explain.core`` for what
    is explained and against which baseline.
    """
    # Imported here: torch and Captum load only when something is explained, not with `bigmodel`.
    from bigmodel.explanations.core import METHODS, explain_batch, not_explainable
    from bigmodel.explanations.inputs import read_table, resolve_model
    from bigmodel.explanations.plot import bar_chart
    from bigmodel.rows import features_from_table

    if method not in METHODS:
        raise BigModelError(f"unknown --method {method!r} (known: {', '.join(METHODS)})")
    if n_steps < 2:
        raise BigModelError(f"--steps must be at least 2, got {n_steps}")
    if rows is not None and rows < 1:
        raise BigModelError(f"--rows must be positive, got {rows}")
    if out is not None and Path(out).exists():
        raise BigModelError(f"{out} already exists (choose another --out; nothing was overwritten)")
    loaded = resolve_model(model, registry)
    why = not_explainable(loaded.meta, method)
    if why:  # before the rows are read: a text model's "missing column" would mislead
        raise BigModelError(f"{model}: {why}")
    table = read_table(input)
    if rows is not None:
        table = table.slice(0, rows)
    x = features_from_table(table, loaded.meta, str(input))
    result = explain_batch(loaded, x, method, target=target, n_steps=n_steps)
    result = {"model": str(model), "model_dir": str(loaded.path), "input": str(input), **result}
    if out is not None:
        bar_chart(result, out, title=f"{Path(str(model)).name}: {method.replace('_', ' ')}")
        result["png"] = str(out)
    return result
