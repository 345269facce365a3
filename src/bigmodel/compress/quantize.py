"""``bigmodel compress quantize``: int8 (dynamic or static) or float16/bfloat16, accuracy-aware.

int8 runs on ONNX Runtime by default (the fast path; the directory's model.onnx is the quantized
model) or on PyTorch (``--backend torch``). With ``--max-drop`` the validation metric may fall by
at most that fraction (default 1% relative, like Intel Neural Compressor's default): when
quantizing every Linear costs more, each layer's sensitivity is measured (the metric with only that
layer kept in float) and the costliest layers are kept in float, one at a time, until the drop is
within the bound.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bigmodel import artifacts
from bigmodel.compress import int8, minilm
from bigmodel.compress.export import INPUT, OUTPUT
from bigmodel.compress.lm_measure import is_language_model
from bigmodel.compress.measure import profile_all, score, side_by_side, split_arrays
from bigmodel.compress.outdir import building, check_layers, derived_meta, destination, open_source
from bigmodel.compress.sensitivity import search
from bigmodel.compress.timing import ort_session, torch_threads
from bigmodel.data.builtin import resolve
from bigmodel.data.stream import ParquetStream, iterate
from bigmodel.errors import BigModelError
from bigmodel.models import Standardize, parse_architecture
from bigmodel.models.layers import compact_state, linear_layers
from bigmodel.models.mlp import ACTIVATIONS

METHODS = ("dynamic", "static", "fp16", "bf16")
SUFFIX = {"dynamic": "int8", "static": "int8-static", "fp16": "fp16", "bf16": "bf16"}
FLOAT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    Standardize,
    nn.Dropout,
    nn.Identity,
    *ACTIVATIONS.values(),
)


def check_choice(method: str, backend: str | None) -> tuple[str, str]:
    """Validate ``--method``/``--backend``; int8 defaults to ONNX Runtime, half precision to torch."""
    if method not in METHODS:
        raise BigModelError(f"unknown --method {method!r} (known: {', '.join(METHODS)})")
    if backend is None:
        backend = "torch" if method in ("fp16", "bf16") else "onnxruntime"
    if backend not in int8.BACKENDS:
        raise BigModelError(f"unknown --backend {backend!r} (known: {', '.join(int8.BACKENDS)})")
    if method in ("fp16", "bf16") and backend != "torch":
        raise BigModelError(f"--method {method} runs on PyTorch; use --backend torch")
    return method, backend


def quantize(
    source: str | Path,
    *,
    method: str = "dynamic",
    backend: str | None = None,
    max_drop: float | None = 0.01,
    calibration_batches: int = 8,
    smooth: float | None = None,
    out: str | Path | None = None,
    threads: int = 1,
    runs: int = 100,
) -> dict[str, Any]:
    """Quantize a model directory (or ``"minilm"``) into a new one; return the side-by-side report
    ``{"original", "compressed", "ratios", "model_dir", ...}``."""
    if str(source) == minilm.SOURCE and method == minilm.FP32:  # the pretrained encoder, unchanged
        return minilm.quantize_minilm(method=method, out=out, suffix=minilm.FP32, threads=threads, runs=runs)
    if str(source) != minilm.SOURCE and is_language_model(artifacts.read_meta(source)):
        from bigmodel.compress.lm_quantize import quantize_lm  # int8 on PyTorch, scored in bits per byte

        return quantize_lm(
            source,
            method=method,
            backend=backend,
            max_drop=max_drop,
            smooth=smooth,
            out=out,
            suffix=SUFFIX.get(method, method),
            threads=threads,
            runs=runs,
        )
    method, backend = check_choice(method, backend)
    if max_drop is not None and not 0.0 <= max_drop < 1.0:
        raise BigModelError(f"--max-drop must be in [0, 1) (a fraction of the metric), got {max_drop}")
    if calibration_batches < 1:
        raise BigModelError(f"--calibration-batches must be at least 1, got {calibration_batches}")
    if smooth is not None and not 0.0 < smooth < 1.0:
        raise BigModelError(f"--smooth (SmoothQuant alpha) must be in (0, 1), got {smooth}")
    if str(source) == minilm.SOURCE:  # a pretrained encoder named on the command line, not a directory
        return minilm.quantize_minilm(
            method=method,
            backend=backend,
            max_drop=max_drop,
            smooth=smooth,
            out=out,
            suffix=SUFFIX[method],
            threads=threads,
            runs=runs,
        )
    src = open_source(source)
    if not parse_architecture(src.meta.architecture).supports.int8:
        raise BigModelError(f"{source}: quantize handles mlp model directories and 'minilm'")
    check_layers(src.module, f"quantize --method {method}", FLOAT_LAYERS)
    dst = destination(source, out, SUFFIX[method])

    params: dict[str, Any] = {"method": method, "backend": backend}
    with tempfile.TemporaryDirectory(prefix="bigmodel-quantize-") as work:
        if method in ("fp16", "bf16"):
            dtype = "float16" if method == "fp16" else "bfloat16"
            module = copy.deepcopy(src.module).to(getattr(torch, dtype))
            arch = {**src.meta.architecture, "dtype": dtype}
            plan = None
            metrics: dict[str, float] = {}
        else:
            plan = _plan_int8(src, method, backend, max_drop, calibration_batches, smooth, Path(work))
            module, arch = plan.module, plan.arch
            params.update(
                max_drop=max_drop,
                quantized=plan.quantized,
                kept_float=plan.kept,
                sensitivity=plan.sensitivity,
                smooth_alpha=smooth,
                calibration_batches=calibration_batches if method == "static" else None,
            )
            metrics = {src.meta.spec.primary_metric: plan.metric}
        meta = derived_meta(src, architecture=arch, method="quantize", params=params, metrics=metrics)
        with building(dst) as tmp:
            artifacts.write_model_dir(tmp, module, meta, state=compact_state(module))
            if plan is not None and plan.onnx is not None:
                int8.install_onnx(tmp, plan.onnx, inputs=[INPUT], output=OUTPUT)
    report = side_by_side(*profile_all([source, dst], threads=threads, runs=runs))
    return {**report, "model_dir": str(dst), "method": method, "backend": backend, "params": params}


@dataclass
class Int8Plan:
    module: nn.Module
    arch: dict[str, Any]
    quantized: list[str]
    kept: list[str]
    metric: float  # on the validation split, as the chosen backend runs it
    sensitivity: dict[str, float] = field(default_factory=dict)
    onnx: Path | None = None  # the chosen quantized ONNX (ONNX Runtime backend)


def _plan_int8(
    src: artifacts.LoadedModel,
    method: str,
    backend: str,
    max_drop: float | None,
    n_calib: int,
    alpha: float | None,
    work: Path,
) -> Int8Plan:
    meta = src.meta
    paths = list(linear_layers(src.module))
    x_val, y_val = split_arrays(meta, "val")
    calib = _train_batches(meta, n_calib) if (method == "static" or alpha is not None) else []
    amax, groups = int8.calibrate(src.module, paths, [(torch.from_numpy(x),) for x in calib])
    smooth = int8.smooth_factors(src.module, amax, groups, alpha) if alpha is not None else {}
    static = int8.input_scales(amax, smooth) if method == "static" else None

    def torch_int8(quantized: list[str]) -> nn.Module:
        m = copy.deepcopy(src.module)
        int8.to_int8(m, quantized, smooth=smooth, static_scales=static)
        return m.eval()

    if backend == "torch":

        def measure(keep: list[str]) -> tuple[float, Path | None]:
            m = torch_int8([p for p in paths if p not in keep])
            with torch.no_grad(), torch_threads(1):
                return score(meta, m(torch.from_numpy(x_val)).numpy(), y_val), None

    else:
        all_int8 = torch_int8(paths)
        twin_path = work / "twin.onnx"
        int8.export_twin(
            int8.float_twin(all_int8, paths),
            (torch.from_numpy(x_val[:2]),),
            twin_path,
            input_names=[INPUT],
            output_name=OUTPUT,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
        nodes = int8.matmul_nodes(twin_path)
        originals = int8.float_weights(src.module, paths, smooth)
        feeds = [{INPUT: x} for x in calib]

        def measure(keep: list[str]) -> tuple[float, Path | None]:
            tag = len(list(work.glob("q*.onnx")))
            cand, q = work / f"c{tag}.onnx", work / f"q{tag}.onnx"
            int8.with_float_layers(twin_path, cand, originals, keep)
            int8.ort_quantize(
                cand, q, method=method, nodes=[nodes[p] for p in paths if p not in keep], calibration=feeds
            )
            session = ort_session(q, 1)
            logits = np.concatenate(
                [session.run([OUTPUT], {INPUT: x_val[i : i + 1024]})[0] for i in range(0, len(x_val), 1024)]
            )
            return score(meta, logits, y_val), q

    cache: dict[tuple[str, ...], tuple[float, Path | None]] = {}

    def remembered(keep: list[str]) -> tuple[float, Path | None]:
        if tuple(keep) not in cache:
            cache[tuple(keep)] = measure(keep)
        return cache[tuple(keep)]

    kept, sensitivity = search(paths, remembered, base=_float_metric(src, x_val, y_val), max_drop=max_drop)
    chosen_metric, chosen_onnx = remembered(kept)
    quantized = [p for p in paths if p not in kept]
    module = torch_int8(quantized)
    layers = {k: v for k, v in (meta.architecture.get("compact") or {}).items() if k not in quantized}
    layers.update(
        {p: {"kind": "int8", "static": static is not None, "smooth": p in smooth} for p in quantized}
    )
    arch = {**meta.architecture, "compact": layers}
    return Int8Plan(module, arch, quantized, kept, chosen_metric, sensitivity, chosen_onnx)


def _float_metric(src: artifacts.LoadedModel, x: np.ndarray, y: torch.Tensor) -> float:
    with torch.no_grad(), torch_threads(1):
        return score(src.meta, src.module(torch.from_numpy(x)).numpy(), y)


def _train_batches(meta: artifacts.ModelMeta, n: int, batch_size: int = 64) -> list[np.ndarray]:
    """The first ``n`` shuffled training batches (seed 0), for calibration."""
    assert meta.dataset is not None
    root, manifest = resolve(meta.dataset["path"])
    stream = ParquetStream(root, manifest, "train", batch_size=batch_size, shuffle=True, seed=0)
    out = []
    for b in iterate(stream, 0, prefetch=0):
        out.append(b.x.numpy())
        if len(out) == n:
            break
    return out
