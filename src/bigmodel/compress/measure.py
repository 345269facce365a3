"""What a compressed model costs and keeps: parameters, bytes on disk, latency, validation metric.

A model directory is measured the way the server will run it: with ONNX Runtime when model.json has
an ``onnx`` entry, else with PyTorch. Latencies of models being compared are measured interleaved
(one run of each in turn) with the same thread count, so background load hits them alike and their
ratio means something even on a busy machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bigmodel import artifacts, tasks
from bigmodel.compress.lm_measure import METRIC as LM_METRIC
from bigmodel.compress.lm_measure import is_language_model, profile_lms
from bigmodel.compress.sentences import sentence_inputs
from bigmodel.compress.timing import latencies, ort_session, torch_threads
from bigmodel.data.builtin import resolve
from bigmodel.data.stream import ParquetStream, iterate
from bigmodel.errors import BigModelError
from bigmodel.models import count_params, parse_architecture
from bigmodel.models.layers import Int8Linear

Inputs = tuple[np.ndarray, ...]
LOWER_IS_BETTER = frozenset({LM_METRIC, "perplexity", "loss"})


@dataclass
class Runner:
    """One model directory, loaded for inference: ``runner(*arrays) -> outputs``."""

    path: Path
    meta: artifacts.ModelMeta
    runtime: str  # "onnxruntime" | "torch"
    params: int
    nonzero: int
    call: Callable[..., np.ndarray]
    module: torch.nn.Module | None = None  # the PyTorch module (language models are timed through it)

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        return self.call(*arrays)


def open_runner(path: str | Path, threads: int = 1) -> Runner:
    """Load a model directory (hashes checked) for timing and scoring."""
    path = Path(path)
    loaded = artifacts.load_model(path)
    params, nonzero = count_params(loaded.module), count_nonzero(loaded.module)
    onnx_info = getattr(loaded.meta, "onnx", None)
    if onnx_info:
        session = ort_session(path / onnx_info["file"], threads, onnx_info.get("disabled_optimizers"))
        names = onnx_info.get("inputs") or [onnx_info["input"]]
        output = onnx_info["output"]

        def run_ort(*arrays: np.ndarray) -> np.ndarray:
            return session.run([output], dict(zip(names, arrays, strict=True)))[0]

        return Runner(path, loaded.meta, "onnxruntime", params, nonzero, run_ort, loaded.module)
    module = loaded.module

    @torch.no_grad()
    def run_torch(*arrays: np.ndarray) -> np.ndarray:
        with torch_threads(threads):
            return module(*(torch.from_numpy(a) for a in arrays)).float().numpy()

    return Runner(path, loaded.meta, "torch", params, nonzero, run_torch, module)


def served_bytes(runner: Runner) -> int:
    """Bytes of what the runtime that serves the model reads: model.json and every artifact it
    records, less, on ONNX Runtime, PyTorch weights that the ONNX graph does not read (an exported
    float model carries its own copy in model.onnx). So exporting a model leaves its size as it was,
    and an int8 model (whose model.onnx reads its weights from model.safetensors) counts them once."""
    meta, unread = runner.meta, set()
    onnx_info = getattr(meta, "onnx", None)
    if runner.runtime == "onnxruntime" and onnx_info and onnx_info.get("external_data") != artifacts.WEIGHTS:
        unread.add(artifacts.WEIGHTS)
    files = sum(f.bytes for name, f in meta.files.items() if name not in unread)
    return files + (runner.path / artifacts.META).stat().st_size


def count_nonzero(model: torch.nn.Module) -> int:
    """Weights and biases that are not zero (what pruning removes), float or int8."""
    n = sum(int((p != 0).sum()) for p in model.parameters())
    for m in model.modules():
        if isinstance(m, Int8Linear):
            n += int((m.qweight != 0).sum()) + int((m.bias != 0).sum())
    return n


def sample_inputs(meta: artifacts.ModelMeta, batch: int, path: str | Path) -> Inputs:
    """A fixed batch of plausible inputs for timing: the family's example inputs, or, for a family
    that reads text, evaluation sentences through the directory's tokenizer."""
    arch = parse_architecture(meta.architecture)
    if arch.reads_text:
        return sentence_inputs(batch, path)
    torch.manual_seed(0)
    mean, std = meta.preprocessing.get("mean"), meta.preprocessing.get("std")
    return tuple(x.numpy() for x in arch.example_inputs(batch, mean=mean, std=std))


def split_arrays(meta: artifacts.ModelMeta, split: str = "val") -> tuple[np.ndarray, torch.Tensor]:
    """All rows of a split of the model's dataset: features (N, F) float32 and labels (N,)."""
    if not meta.dataset:
        raise BigModelError("the model records no dataset to validate on")
    root, manifest = resolve(meta.dataset["path"])
    stream = ParquetStream(root, manifest, split, batch_size=4096, shuffle=False)
    xs, ys = [], []
    for b in iterate(stream, 0, prefetch=0):
        xs.append(b.x)
        ys.append(b.y)
    return torch.cat(xs).numpy(), torch.cat(ys)


def score(meta: artifacts.ModelMeta, logits: np.ndarray, y: torch.Tensor) -> float:
    """The primary metric (accuracy, or r2 for regression) of logits against labels."""
    spec = meta.spec
    return tasks.metrics(spec, torch.from_numpy(np.asarray(logits, dtype=np.float32)), y)[spec.primary_metric]


def val_metric(runner: Runner) -> float:
    """The primary metric on the model's validation split, run the way ``runner`` runs it."""
    meta = runner.meta
    recorded = parse_architecture(meta.architecture).metric
    if recorded:  # measured against the fp32 model when it was compressed, not on a dataset
        return float(meta.metrics.get(recorded, float("nan")))
    x, y = split_arrays(meta)
    return score(meta, np.concatenate([runner(x[i : i + 1024]) for i in range(0, len(x), 1024)]), y)


def profile_all(
    paths: list[str | Path],
    *,
    threads: int = 1,
    runs: int = 100,
    batches: tuple[int, ...] = (1, 64),
    rounds: int = 1,
) -> list[dict[str, Any]]:
    """Params, file bytes, latency per batch size (interleaved across models) and metric of each;
    for language models tokens/s at batch 1 and 16 and bits per byte instead (``lm_measure``).
    ``rounds``: latency is the fastest of that many rounds of ``runs`` (``timing.latencies``)."""
    runners = [open_runner(p, threads) for p in paths]
    lms = [is_language_model(r.meta) for r in runners]
    if any(lms) and not all(lms):
        raise BigModelError(
            "language models (bits per byte, tokens/s) are compared with language models only"
        )
    out: list[dict[str, Any]] = [
        {
            "path": str(r.path),
            "runtime": r.runtime,
            "params": r.params,
            "nonzero_params": r.nonzero,
            "file_bytes": served_bytes(r),
            "metric_name": metric_name(r.meta),
        }
        for r in runners
    ]
    if all(lms):
        models = [(r.meta, r.path, r.module) for r in runners if r.module is not None]
        profile_lms(models, out, threads=threads, runs=runs)
        return out
    for b in batches:
        ms = latencies(
            runners,
            [sample_inputs(r.meta, b, r.path) for r in runners],
            runs=runs if b == 1 else max(min(runs, 5), runs // 4),
            rounds=rounds,
        )
        for o, m in zip(out, ms, strict=True):
            o[f"latency_ms_b{b}"] = m
    for o, r in zip(out, runners, strict=True):
        o["metric"] = val_metric(r)
    return out


def metric_name(meta: artifacts.ModelMeta) -> str:
    """The name of the metric ``val_metric`` reports for this model."""
    if is_language_model(meta):
        return LM_METRIC
    return parse_architecture(meta.architecture).metric or meta.spec.primary_metric


def lower_is_better(name: str) -> bool:
    """Whether a smaller value of the metric ``name`` is the better one (bits per byte, a loss)."""
    return name in LOWER_IS_BETTER


def side_by_side(original: dict[str, Any], compressed: dict[str, Any]) -> dict[str, Any]:
    """``{"original", "compressed", "ratios"}``: sizes and latencies as original / compressed and
    throughputs as compressed / original (higher is better either way), the metric as compressed -
    original; ``metric_relative_drop`` is how much worse it got, relative (for bits per byte, a rise)."""
    ratios: dict[str, Any] = {}
    for key in ("params", "file_bytes"):
        ratios[key] = original[key] / max(compressed[key], 1)
    for key in original:
        if key.startswith("latency_ms_") and key in compressed:
            ratios["speedup_" + key.removeprefix("latency_ms_")] = original[key] / max(compressed[key], 1e-9)
        if key.startswith("tokens_per_s_") and key in compressed:
            ratios["speedup_" + key.removeprefix("tokens_per_s_")] = compressed[key] / max(
                original[key], 1e-9
            )
    ratios["metric_delta"] = compressed["metric"] - original["metric"]
    worse = (
        ratios["metric_delta"]
        if lower_is_better(original.get("metric_name", ""))
        else -ratios["metric_delta"]
    )
    ratios["metric_relative_drop"] = worse / max(abs(original["metric"]), 1e-12)
    return {"original": original, "compressed": compressed, "ratios": ratios}
