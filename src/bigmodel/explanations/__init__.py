"""Explanations: per-feature attributions (Captum) of a model's answers, in raw input features.

A server route calls the core directly, with the model it already holds and the decoded batch::

    result = explain_batch(loaded, x, method, target=target, n_steps=64)  # x: (B, F) numpy

``BigModelError`` (a bad shape, NaN in a named column, an unknown method or class) is the 400.
"""

from typing import TYPE_CHECKING

from bigmodel.explanations.run import explain
from bigmodel.lazy import lazy_exports

if TYPE_CHECKING:
    from bigmodel.explanations.core import METHODS, explain_batch
    from bigmodel.explanations.inputs import resolve_model
    from bigmodel.rows import features_from_table, labels_from_column

# torch and Captum load on first use: `bigmodel.explain` (this function) keeps `import bigmodel` light.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "METHODS": "bigmodel.explanations.core",
            "explain_batch": "bigmodel.explanations.core",
            "features_from_table": "bigmodel.rows",
            "labels_from_column": "bigmodel.rows",
            "resolve_model": "bigmodel.explanations.inputs",
        },
    )

__all__ = [
    "METHODS",
    "explain",
    "explain_batch",
    "features_from_table",
    "labels_from_column",
    "resolve_model",
]
