"""Explanations: per-feature attributions (Captum) of a model's answers, in raw input features.

A server route calls the core directly, with the model it already holds and the decoded batch::

    result = explain_batch(loaded, x, method, target=target, n_steps=64)  # x: (B, F) numpy

``BigModelError`` (a bad shape, NaN in a named column, an unknown method or class) is the 400.
"""

from bigmodel.explain.core import METHODS, explain_batch
from bigmodel.explain.inputs import features_from_table, labels_from_column, resolve_model
from bigmodel.explain.run import explain

__all__ = [
    "METHODS",
    "explain",
    "explain_batch",
    "features_from_table",
    "labels_from_column",
    "resolve_model",
]
