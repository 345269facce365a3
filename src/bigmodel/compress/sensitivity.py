"""Accuracy-aware int8: which layers to keep in float so the metric stays within ``--max-drop``.

Shared by the MLP path (``quantize``) and the sentence encoder path (``minilm``); ``measure(keep)``
is whatever scores a candidate there (ONNX Runtime or PyTorch, dataset metric or cosine).
"""

from __future__ import annotations

from typing import Any

from bigmodel.console import progress_bar
from bigmodel.errors import BigModelError


def search(
    paths: list[str], measure: Any, *, base: float, max_drop: float | None
) -> tuple[list[str], dict[str, float]]:
    """Layers to keep in float so that the relative metric drop stays within ``max_drop``.

    ``measure(keep) -> (metric, ...)``. Sensitivity of a layer = the metric gained by keeping only
    it in float; the most sensitive go back to float first. Raises if even that cannot meet the
    bound without keeping every layer in float."""

    def drop(m: float) -> float:
        return (base - m) / max(abs(base), 1e-12)

    full = measure([])[0]
    if max_drop is None or drop(full) <= max_drop:
        return [], {}
    sensitivity = {}
    with progress_bar("per-layer sensitivity", len(paths)) as advance:
        for p in paths:
            sensitivity[p] = measure([p])[0] - full
            advance()
    kept: list[str] = []
    for p in sorted(paths, key=lambda p: -sensitivity[p]):
        kept.append(p)
        if len(kept) == len(paths):
            break
        if drop(measure(kept)[0]) <= max_drop:
            return kept, sensitivity
    raise BigModelError(
        f"int8 drops the metric by {100 * drop(full):.2f}% and no choice of float layers short of all "
        f"meets --max-drop {max_drop:g}; nothing written"
    )
