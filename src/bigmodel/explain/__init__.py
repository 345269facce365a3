"""Explanations: per-feature attributions (Captum) of a model's answers, in raw input features."""

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
