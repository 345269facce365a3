"""What a compressed language model keeps and what it gains: bits per byte and tokens per second.

A byte-level LM is scored on the held-out text it was validated on when it was trained (the first
rows of its dataset's val split, in stored order, so that every model compared reads the same
bytes), and timed by greedy generation with the KV cache (``bigmodel.generation``) at batch 1 and
batch 16, runs of the models compared interleaved round by round under the same thread count.
Bits per byte is lower-is-better, unlike the tabular metrics: ``measure.side_by_side`` knows.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bigmodel import artifacts
from bigmodel.compress.timing import torch_threads
from bigmodel.data.manifest import load_manifest
from bigmodel.data.stream import ParquetStream, iterate
from bigmodel.errors import BigModelError

METRIC = "bits_per_byte"
EVAL_ROWS = 64  # held-out rows scored (64 x 256 bytes for pysource): enough to rank int8 choices
BATCHES = (1, 16)  # sequences generated at once when timing
NEW_TOKENS = 32  # generated per sequence per timed run (after a 16-byte prompt)
_EVAL_BATCH = 8  # rows per forward: (8, T, 256) float logits stay small


def is_language_model(meta: artifacts.ModelMeta) -> bool:
    """Whether a model directory holds a next-byte language model (task ``lm``)."""
    return meta.task.get("task") == "lm"


def heldout(meta: artifacts.ModelMeta, where: str | Path, rows: int = EVAL_ROWS) -> torch.Tensor:
    """The first ``rows`` rows (``context + 1`` bytes each) of the val split of the LM's dataset, as
    (N, context + 1) int64. One-line errors when the dataset is not recorded, gone, or has no val rows."""
    if not meta.dataset or "path" not in meta.dataset:
        raise BigModelError(f"{where} records no dataset: its held-out text cannot be found")
    root = Path(meta.dataset["path"])
    if not (root / "manifest.json").is_file():
        raise BigModelError(f"{where}: its dataset {root} is gone (the held-out text to score it on)")
    manifest = load_manifest(root)
    if "val" not in manifest.splits or manifest.splits["val"].rows == 0:
        raise BigModelError(f"{where}: its dataset {root} has no held-out (val) text to score it on")
    stream = ParquetStream(root, manifest, "val", batch_size=min(rows, 256), shuffle=False)
    xs, ys = [], []
    taken = 0
    batches = iterate(stream, 0, prefetch=0)
    for b in batches:
        xs.append(b.x)
        ys.append(b.y[:, -1:])  # the row's last byte: x then y[-1] is the whole row
        taken += len(b.x)
        if taken >= rows:
            break
    batches.close()
    return torch.cat([torch.cat(xs), torch.cat(ys)], dim=1)[:rows]


@torch.no_grad()
def bits_per_byte(module: nn.Module, rows: torch.Tensor) -> float:
    """Mean cross-entropy of the next byte, in bits, over every position of ``rows`` (N, T + 1):
    8.0 for a model that spreads its bets evenly over the 256 byte values."""
    was_training = module.training
    module.eval()
    nats, count = 0.0, 0
    try:
        for i in range(0, len(rows), _EVAL_BATCH):
            r = rows[i : i + _EVAL_BATCH]
            logits = module(r[:, :-1]).double()  # (B, T, V); float64: sums of many small losses
            nats += float(F.cross_entropy(logits.flatten(0, 1), r[:, 1:].flatten(), reduction="sum"))
            count += r[:, 1:].numel()
    finally:
        module.train(was_training)
    return nats / max(count, 1) / math.log(2)


def generation_speed(module: nn.Module, batch: int, *, threads: int, new_tokens: int = NEW_TOKENS) -> float:
    """Greedy generation with the KV cache: new tokens per second over ``batch`` sequences."""
    # the engine module itself: the generation package's front door also opens registry refs,
    # which compression may not import
    from bigmodel.generation.engine import tokens_per_second

    context = int(getattr(module, "context", 64))
    prompt = min(16, context // 2)
    with torch_threads(threads):
        return tokens_per_second(module, batch, min(new_tokens, context - prompt), prompt_len=prompt)


def speeds(modules: list[nn.Module], *, threads: int, rounds: int) -> list[dict[str, float]]:
    """``tokens_per_s_b{B}`` of each module for B in ``BATCHES``: the median of ``rounds`` runs,
    taken in turn (model 1, model 2, ..., then again), after one untimed run each."""
    out: list[dict[str, float]] = [{} for _ in modules]
    for b in BATCHES:
        for m in modules:  # warm-up: allocator, the first forward's one-off costs
            generation_speed(m, b, threads=threads, new_tokens=2)
        runs: list[list[float]] = [[] for _ in modules]
        for _ in range(max(rounds, 1)):
            for r, m in zip(runs, modules, strict=True):
                r.append(generation_speed(m, b, threads=threads))
        for o, r in zip(out, runs, strict=True):
            o[f"tokens_per_s_b{b}"] = statistics.median(r)
    return out


def profile_lms(
    models: list[tuple[artifacts.ModelMeta, Path, nn.Module]],
    out: list[dict[str, Any]],
    *,
    threads: int,
    runs: int,
) -> None:
    """Fill ``out`` (one dict per (model.json, directory, module), from ``measure.profile_all``)
    with tokens/s and bits per byte; language models are run on PyTorch, where generation runs them."""
    modules = [m for _, _, m in models]
    # timed rounds: ~1 per 20 of --runs (the default 100 gives 5); generation is long enough per run
    for o, s in zip(out, speeds(modules, threads=threads, rounds=max(1, min(5, runs // 20))), strict=True):
        o.update(s)
    cache: dict[str, torch.Tensor] = {}
    for o, (meta, path, m) in zip(out, models, strict=True):
        key = str((meta.dataset or {}).get("path"))  # one read for models of the same text
        if key not in cache:
            cache[key] = heldout(meta, path)
        o["runtime"] = "torch"
        o["metric_name"] = METRIC
        with torch_threads(threads):
            o["metric"] = bits_per_byte(m, cache[key])
