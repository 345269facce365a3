"""Per-feature attributions of a loaded model's answers, with Captum, in raw input features.

``explain_batch(loaded, x, method)`` is the one entry point for the CLI and for a server route: a
loaded model directory, a (B, F) float batch of raw features, a method -> a JSON-able dict.

What is explained, F(x), is one number per row for the *target* class (default: the predicted one):
binary: the log-odds of the target class (+logit for class 1, -logit for class 0); multiclass: the
logit of the target class; regression: the prediction in target units. Models standardize inside
(``Standardize`` buffers), so attributions are in terms of the raw features the caller sent.

Baselines (what a feature is compared against), by default:
  integrated_gradients, feature_ablation: the training mean of every feature (model.json
  preprocessing.mean): "how does this row differ from an average row";
  gradient_shap: 32 seeded draws from N(training mean, training std), per feature.

Integrated Gradients is exact in the limit: attributions sum to F(x) - F(baseline) (completeness).
The Riemann/Gauss-Legendre sum misses by ``convergence_delta``; a row is flagged when
|delta| > 5% of |F(x) - F(baseline)| (use more ``n_steps``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from bigmodel import tasks
from bigmodel.artifacts import LoadedModel
from bigmodel.errors import BigModelError
from bigmodel.tasks import TaskSpec

Method = Literal["integrated_gradients", "gradient_shap", "feature_ablation"]
METHODS: tuple[str, ...] = ("integrated_gradients", "gradient_shap", "feature_ablation")
DELTA_TOLERANCE = 0.05  # flag |delta| > 5% of |F(x) - F(baseline)|


class Explained(nn.Module):
    """The model's outputs as the per-class quantities that attributions explain: (B, F) -> (B, C)."""

    def __init__(self, model: nn.Module, spec: TaskSpec):
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)  # (B, out)
        if self.spec.task == "binary":
            return torch.cat([-z, z], dim=1)  # (B, 2): log-odds of class 0 and of class 1
        if self.spec.task == "regression":
            return z * self.spec.target_std + self.spec.target_mean  # (B, 1)
        return z  # (B, K) logits


def output_name(spec: TaskSpec) -> str:
    return {"binary": "log-odds of the target class", "multiclass": "logit of the target class"}.get(
        spec.task, "prediction"
    )


def target_code(spec: TaskSpec, target: Any) -> int:
    """A class given as its label value ('malignant', 7) or its code (0..K-1) -> the code."""
    if spec.task == "regression":
        raise BigModelError("a target class applies to classification models; this model is a regression")
    values = spec.label_values or list(range(spec.num_outputs))
    for code, v in enumerate(values):
        if str(v) == str(target):
            return code
    # ASCII digits only: str.isdigit also accepts '²', which int() refuses
    if isinstance(target, int) or (isinstance(target, str) and target.isascii() and target.isdigit()):
        code = int(target)
        if 0 <= code < len(values):
            return code
    raise BigModelError(f"unknown target class {target!r} (classes: {', '.join(map(str, values))})")


def check_batch(x: np.ndarray, features: list[str]) -> np.ndarray:
    """A (B, F) finite float32 batch, or a one-line error naming the column (for a server route)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != len(features):
        raise BigModelError(f"input has shape {tuple(x.shape)}; the model expects (rows, {len(features)})")
    if not np.issubdtype(x.dtype, np.number):
        raise BigModelError(f"input has dtype {x.dtype}; the model expects numbers")
    x = x.astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        j = int(np.flatnonzero(~finite.all(axis=0))[0])
        i = int(np.flatnonzero(~finite[:, j])[0])
        raise BigModelError(f"feature column '{features[j]}' has a NaN or infinite value (row {i})")
    if len(x) == 0:
        raise BigModelError("input has no rows")
    return x


def default_baselines(loaded: LoadedModel, method: str, samples: int = 32, seed: int = 0) -> torch.Tensor:
    """(1, F) training mean, or (samples, F) draws from N(mean, std) for gradient_shap."""
    pre = loaded.meta.preprocessing
    f = len(loaded.meta.features)
    mean = torch.tensor(pre.get("mean") or [0.0] * f, dtype=torch.float32)[None]  # (1, F)
    if method != "gradient_shap":
        return mean
    std = torch.tensor(pre.get("std") or [1.0] * f, dtype=torch.float32)[None]
    g = torch.Generator().manual_seed(seed)
    return mean + std * torch.randn(samples, f, generator=g)  # (S, F)


GRADIENT_METHODS = ("integrated_gradients", "gradient_shap")


def not_explainable(meta: Any, method: str) -> str | None:
    """Why ``method`` cannot explain this model (model.json's ``meta``), or None."""
    from bigmodel.models.arch import int8_layers, parse_architecture

    arch = parse_architecture(meta.architecture)
    if not arch.supports.explain:
        return f"explanations handle tabular (mlp) models, not a {arch.name} model"
    if method in GRADIENT_METHODS and int8_layers(arch):
        return (
            f"{method} follows gradients, which the rounding of an int8 model makes zero: "
            "use the feature_ablation method, or explain its float version (e.g. its parent)"
        )
    return None


def explain_batch(
    loaded: LoadedModel,
    x: np.ndarray,
    method: str = "integrated_gradients",
    *,
    target: Any = None,
    baselines: np.ndarray | None = None,
    n_steps: int = 64,
    n_samples: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Attributions of every feature for every row of ``x`` (B, F raw features) -> a JSON-able dict.

    ``target``: a class label or code to explain for every row (default: each row's prediction).
    ``baselines``: (F,) or (S, F) raw-feature rows to compare against (default: see module doc).
    """
    from captum.attr import FeatureAblation, GradientShap, IntegratedGradients

    if method not in METHODS:
        raise BigModelError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    why = not_explainable(loaded.meta, method)
    if why:
        raise BigModelError(why)
    spec, features = loaded.spec, loaded.meta.features
    xt = torch.from_numpy(check_batch(x, features))  # (B, F)
    net = Explained(loaded.module.eval(), spec)
    if baselines is None:
        base = default_baselines(loaded, method, seed=seed)
        baseline_kind = (
            "training mean" if method != "gradient_shap" else "N(training mean, training std) samples"
        )
    else:
        base = torch.from_numpy(check_batch(np.atleast_2d(baselines), features))
        baseline_kind = "given"
        if method != "gradient_shap" and len(base) not in (1, len(xt)):
            raise BigModelError(f"{method} needs 1 baseline row or one per input row, got {len(base)}")
    with torch.no_grad():
        out = net(xt)  # (B, C)
        post = tasks.postprocess(spec, loaded.module(xt))
    if spec.task == "regression":
        codes = torch.zeros(len(xt), dtype=torch.long)
    elif target is None:
        codes = post["label_codes"]
    else:
        codes = torch.full((len(xt),), target_code(spec, target), dtype=torch.long)

    delta: torch.Tensor | None = None
    base_out: torch.Tensor
    if method == "integrated_gradients":
        b = base.expand_as(xt) if len(base) == 1 else base
        attr, delta = IntegratedGradients(net).attribute(
            xt, baselines=b, target=codes, n_steps=n_steps, return_convergence_delta=True
        )
        with torch.no_grad():
            base_out = net(b).gather(1, codes[:, None])[:, 0]
    elif method == "gradient_shap":
        # GradientShap draws baselines (numpy) and path points at random: seed both, and put the
        # global generators back as they were
        np_state = np.random.get_state()
        try:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                np.random.seed(seed)
                attr = GradientShap(net).attribute(xt, baselines=base, target=codes, n_samples=n_samples)
        finally:
            np.random.set_state(np_state)
        with torch.no_grad():  # E[F(baseline)] over the baseline distribution
            base_out = net(base)[:, codes].mean(dim=0)
    else:
        b = base.expand_as(xt) if len(base) == 1 else base
        attr = FeatureAblation(net).attribute(xt, baselines=b, target=codes)
        with torch.no_grad():
            base_out = net(b).gather(1, codes[:, None])[:, 0]
    attr = attr.detach()  # (B, F)
    fx = out.gather(1, codes[:, None])[:, 0]  # (B,)
    gap = (fx - base_out).abs()

    rows = []
    values = spec.label_values or list(range(spec.num_outputs))
    for i in range(len(xt)):
        a = attr[i].tolist()
        row: dict[str, Any] = {
            "row": i,
            "output": float(fx[i]),
            "baseline_output": float(base_out[i]),
            "attributions": dict(zip(features, a, strict=True)),
            "top": [[features[j], a[j]] for j in np.argsort(-np.abs(a))[:5].tolist()],
        }
        if spec.task == "regression":
            row["prediction"] = float(post["predictions"][i])
        else:
            c = int(codes[i])
            row["target"] = values[c] if c < len(values) else c
            row["predicted"] = values[int(post["label_codes"][i])]
            row["probability"] = float(post["probabilities"][i, c])
        if delta is not None:
            d = float(delta[i])
            row["convergence_delta"] = d
            row["delta_flagged"] = abs(d) > DELTA_TOLERANCE * float(gap[i])
        rows.append(row)
    importance = attr.abs().mean(dim=0).tolist()
    order = np.argsort(-np.array(importance)).tolist()
    result: dict[str, Any] = {
        "method": method,
        "explained_output": output_name(spec),
        "baseline": {"kind": baseline_kind, "rows": len(base)},
        "features": features,
        "rows": rows,
        "importance": {features[j]: importance[j] for j in order},
    }
    if delta is not None:
        result.update(
            n_steps=n_steps,
            convergence_delta_tolerance=DELTA_TOLERANCE,
            flagged=sum(r["delta_flagged"] for r in rows),
            max_abs_convergence_delta=float(delta.abs().max()),
        )
    return result
