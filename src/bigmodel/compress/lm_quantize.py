"""``bigmodel compress quantize LM_DIR``: a byte-level language model in int8, fp16 or bf16.

int8 replaces the Linear layers of the blocks (query/key/value, attention output, both MLP layers)
and the output head with packed ``Int8Linear`` layers: weights int8 per output channel, activations
quantized at run time, the product on FBGEMM's dynamic int8 linear. Measured on this project's
2-core CPU (a 6-layer width-384 LM, greedy generation with the KV cache, 1 thread), it gave about 2x
the float32 tokens/s at batch 1 and 3.4x at batch 16, where ATen's ``_int_mm`` (the unpacked
``Int8Linear``, torchao's CPU path) gave 1.4x and 2.5x; torch's int8 weight-only kernel
(``_weight_int8pack_mm``) was several times slower than float32. It stays a PyTorch module because text
generation (``bigmodel.generation``) runs the model with its KV cache through the very same module
code; an ONNX graph would need the cache as inputs and outputs. Embeddings and LayerNorms stay
float: they are lookups and per-token scalings, no matrix products to speed up.

Accuracy-aware as for tabular models: the metric is bits per byte on the held-out text of the model's
own dataset; when int8 everywhere costs more than ``--max-drop`` (relative), the layers whose int8
costs most go back to float, one at a time (``sensitivity.search``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bigmodel import artifacts
from bigmodel.compress.lm_measure import EVAL_ROWS, METRIC, bits_per_byte, heldout
from bigmodel.compress.measure import profile_all, side_by_side
from bigmodel.compress.outdir import building, derived_meta, destination, open_source
from bigmodel.compress.sensitivity import search
from bigmodel.compress.timing import torch_threads
from bigmodel.errors import BigModelError
from bigmodel.models.layers import Int8Linear, compact_state, linear_layers, replace_module

LM_METHODS = ("dynamic", "fp16", "bf16")


def check_lm_choice(method: str, backend: str | None, smooth: float | None) -> None:
    """Refuse, in one line, the quantize flags that do not apply to a language model."""
    if method not in LM_METHODS:
        raise BigModelError(
            f"--method {method} does not apply to a language model (known: {', '.join(LM_METHODS)})"
        )
    if backend not in (None, "torch"):
        raise BigModelError(
            f"--backend {backend} does not apply to a language model: it runs on PyTorch, where "
            "generation runs it with its KV cache (leave --backend out)"
        )
    if smooth is not None:
        raise BigModelError("--smooth (SmoothQuant) applies to mlp models and minilm, not a language model")


def quantize_lm(
    source: str | Path,
    *,
    method: str = "dynamic",
    backend: str | None = None,
    max_drop: float | None = 0.02,
    smooth: float | None = None,
    out: str | Path | None = None,
    suffix: str = "int8",
    eval_rows: int | None = None,
    threads: int = 1,
    runs: int = 100,
) -> dict[str, Any]:
    """Quantize an LM directory into a new one; return the side-by-side report (bits per byte,
    tokens/s at batch 1 and 16, parameters, file bytes) with ``model_dir`` and ``params``."""
    check_lm_choice(method, backend, smooth)
    if max_drop is not None and not 0.0 <= max_drop < 1.0:
        raise BigModelError(f"--max-drop must be in [0, 1) (a fraction of the metric), got {max_drop}")
    src = open_source(source)
    if any(isinstance(m, Int8Linear) for m in src.module.modules()):
        raise BigModelError(f"{source} is already int8: quantize needs a float language model")
    rows = heldout(src.meta, source, eval_rows or EVAL_ROWS)
    dst = destination(source, out, suffix)
    params: dict[str, Any] = {"method": method, "backend": "torch", "eval_rows": len(rows)}
    # scored with --threads, as the report scores it: on a busy 2-core machine 2 OpenMP threads
    # can be many times slower than 1
    with torch_threads(threads):
        base = bits_per_byte(src.module, rows)
        if method in ("fp16", "bf16"):
            dtype = "float16" if method == "fp16" else "bfloat16"
            module = copy.deepcopy(src.module).to(getattr(torch, dtype))
            arch = {**src.meta.architecture, "dtype": dtype}
            metric = bits_per_byte(artifacts_module(arch, module), rows)
        else:
            module, arch, metric, chosen = plan_int8(src, rows, base=base, max_drop=max_drop)
            params.update(chosen)
    params["bits_per_byte_float"] = base
    meta = derived_meta(src, architecture=arch, method="quantize", params=params, metrics={METRIC: metric})
    with building(dst) as tmp:
        artifacts.write_model_dir(tmp, module, meta, state=compact_state(module))
    report = side_by_side(*profile_all([source, dst], threads=threads, runs=runs))
    return {**report, "model_dir": str(dst), "method": method, "backend": "torch", "params": params}


def artifacts_module(arch: dict[str, Any], module: nn.Module) -> nn.Module:
    """The module as ``artifacts.load_model`` will rebuild it (with the dtype hooks that cast the
    logits back to float32), holding ``module``'s weights: scored the way it will be served."""
    from bigmodel.models import build_model

    rebuilt = build_model(arch)
    rebuilt.load_state_dict(module.state_dict())
    return rebuilt.eval()


def quantizable(module: nn.Module) -> list[str]:
    """The Linear layers int8 applies to: every block's and the head (embeddings are lookups)."""
    return [p for p in linear_layers(module) if p.startswith("blocks.") or p == "head"]


def plan_int8(
    src: artifacts.LoadedModel, rows: torch.Tensor, *, base: float, max_drop: float | None
) -> tuple[nn.Module, dict[str, Any], float, dict[str, Any]]:
    """The int8 module, its architecture dict, its bits per byte and what was chosen: layers that
    would raise bits per byte by more than ``max_drop`` (relative) stay float."""
    paths = quantizable(src.module)

    def with_int8(quantized: list[str]) -> nn.Module:
        m = copy.deepcopy(src.module)
        for p in quantized:
            lin = m.get_submodule(p)
            assert isinstance(lin, nn.Linear)
            replace_module(m, p, Int8Linear.from_linear(lin, packed=True))
        return m.eval()

    cache: dict[tuple[str, ...], float] = {}

    def measure(keep: list[str]) -> tuple[float]:
        # search() maximises: a negated bits per byte makes its relative drop the relative rise
        if tuple(keep) not in cache:
            cache[tuple(keep)] = -bits_per_byte(with_int8([p for p in paths if p not in keep]), rows)
        return (cache[tuple(keep)],)

    kept, sensitivity = search(paths, measure, base=-base, max_drop=max_drop)
    quantized = [p for p in paths if p not in kept]
    module = with_int8(quantized)
    layers = dict(src.meta.architecture.get("compact") or {})
    layers.update({p: {"kind": "int8", "static": False, "smooth": False, "packed": True} for p in quantized})
    arch = {**src.meta.architecture, "compact": layers}
    chosen = {
        "max_drop": max_drop,
        "quantized": quantized,
        "kept_float": kept,
        "sensitivity": sensitivity,  # bits per byte saved by keeping only that layer float
    }
    return module, arch, -measure(kept)[0], chosen
