"""``bigmodel compress prune``: magnitude pruning that really shrinks the model, then fine-tuning.

Unstructured: global pruning on LAMP scores (Lee et al., ICLR 2021) with a cubic gradual schedule
(Zhu & Gupta 2017), each step fine-tuned by the normal trainer (``model.init_from`` +
``model.keep_sparsity``; ``--workers N`` trains distributed). Global magnitude on raw |w| removes
whole wide-fan-in layers, whose weights are small because there are many of them (a 512-input
layer's weights are ~5x smaller than a 20-input layer's under the usual init). LAMP divides each
weight's square by the sum of the squares of the weights in its layer at least as large, which makes
scores comparable across layers and always keeps each layer's largest weight: no layer collapses,
with no per-layer quota to tune. The saved layers are ``SparseLinear``: a bitmask plus the non-zero
values on disk, a dense Linear again when loaded.

Structured: whole hidden neurons go (scored by the L2 norm of their incoming row times that of their
outgoing column, the same fraction from every hidden layer); the Linear layers are rebuilt smaller,
so the model has really fewer parameters and FLOPs, and is fine-tuned the same way.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bigmodel import artifacts
from bigmodel.compress.measure import profile_all, side_by_side
from bigmodel.compress.outdir import building, check_layers, derived_meta, destination, open_source
from bigmodel.compress.quantize import FLOAT_LAYERS
from bigmodel.config import DistConfig, ModelConfig, TrainConfig, validate
from bigmodel.errors import BigModelError
from bigmodel.models import MLP, MLPArch, build_model, mlp_architecture, parse_architecture
from bigmodel.models.layers import SparseLinear, compact_state, linear_layers, replace_module
from bigmodel.training import train


def lamp_scores(w: torch.Tensor) -> torch.Tensor:
    """LAMP score of every weight: w_u^2 / sum_{|w_v| >= |w_u|} w_v^2 within the layer (same shape)."""
    sq = w.detach().float().reshape(-1).pow(2)
    ordered, idx = sq.sort()  # ascending
    tail = ordered.flip(0).cumsum(0).flip(0)  # sum of the squares from this weight up
    scores = torch.empty_like(sq)
    scores[idx] = ordered / tail.clamp(min=1e-30)
    return scores.view_as(w)


def global_masks(
    weights: dict[str, torch.Tensor], sparsity: float, scoring: str = "lamp"
) -> dict[str, torch.Tensor]:
    """Keep masks (True = kept) removing ``sparsity`` of all the weights together, by score."""
    score = {
        n: (lamp_scores(w) if scoring == "lamp" else w.detach().abs().float()) for n, w in weights.items()
    }
    flat = torch.cat([s.reshape(-1) for s in score.values()])
    keep = flat.numel() - round(sparsity * flat.numel())
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.topk(flat, keep, sorted=False).indices] = True
    masks, start = {}, 0
    for n, s in score.items():
        masks[n] = chosen[start : start + s.numel()].view_as(s)
        start += s.numel()
    return masks


def schedule(sparsity: float, steps: int) -> list[float]:
    """Cubic gradual schedule: fast early, gentle near the target (Zhu & Gupta 2017)."""
    return [sparsity * (1 - (1 - t / steps) ** 3) for t in range(1, steps + 1)]


@torch.no_grad()
def prune_unstructured(model: nn.Module, sparsity: float, scoring: str = "lamp") -> dict[str, dict[str, Any]]:
    """Zero the lowest-scored weights of every Linear in place and make them ``SparseLinear``;
    return the ``arch["compact"]`` entries."""
    lins = linear_layers(model)
    masks = global_masks({p: m.weight for p, m in lins.items()}, sparsity, scoring)
    for p, lin in lins.items():
        lin.weight.mul_(masks[p])
        if not isinstance(lin, SparseLinear):
            sparse = SparseLinear(lin.in_features, lin.out_features, bias=lin.bias is not None)
            sparse.load_state_dict(lin.state_dict())
            replace_module(model, p, sparse)
    return {p: {"kind": "sparse"} for p in lins}


@torch.no_grad()
def prune_structured(model: MLP, arch: dict[str, Any], fraction: float) -> tuple[MLP, dict[str, Any]]:
    """A smaller MLP without ``fraction`` of each hidden layer's neurons (at least one kept)."""
    lins = [m for m in model.net if isinstance(m, nn.Linear)]
    keep_idx: list[torch.Tensor] = []
    for i in range(len(lins) - 1):
        w_in, w_out = lins[i].weight, lins[i + 1].weight  # (h, in), (out, h)
        importance = w_in.norm(dim=1) * w_out.norm(dim=0)  # (h,)
        k = max(1, round((1 - fraction) * w_in.shape[0]))
        keep_idx.append(torch.topk(importance, k).indices.sort().values)
    spec = parse_architecture(arch)
    assert isinstance(spec, MLPArch)
    new_arch = mlp_architecture(
        spec.in_features, spec.out_features, [len(k) for k in keep_idx], spec.activation, spec.dropout
    )
    small = build_model(new_arch)
    assert isinstance(small, MLP)
    small.norm.load_state_dict(model.norm.state_dict())
    new_lins = [m for m in small.net if isinstance(m, nn.Linear)]
    for i, (old, new) in enumerate(zip(lins, new_lins, strict=True)):
        rows = keep_idx[i] if i < len(keep_idx) else torch.arange(old.out_features)
        cols = keep_idx[i - 1] if i > 0 else torch.arange(old.in_features)
        new.weight.copy_(old.weight[rows][:, cols])
        new.bias.copy_(old.bias[rows])
    return small, new_arch


def prune(
    source: str | Path,
    *,
    sparsity: float = 0.9,
    structured: bool = False,
    finetune_epochs: int = 10,
    steps: int = 4,
    workers: int = 1,
    scoring: str = "lamp",
    out: str | Path | None = None,
    threads: int = 1,
    runs: int = 100,
    progress: bool = True,
) -> dict[str, Any]:
    """Prune a model directory into a new one; return the side-by-side report."""
    if not 0.0 <= sparsity < 1.0:
        raise BigModelError(f"--sparsity must be in [0, 1), got {sparsity}")
    if finetune_epochs < 0 or steps < 1 or workers < 1:
        raise BigModelError("--finetune-epochs must be >= 0, --steps and --workers >= 1")
    if scoring not in ("lamp", "magnitude"):
        raise BigModelError(f"unknown --scoring {scoring!r} (known: lamp, magnitude)")
    src = open_source(source)
    if not parse_architecture(src.meta.architecture).supports.prune:
        raise BigModelError(f"{source}: pruning handles mlp model directories")
    check_layers(src.module, "pruning", FLOAT_LAYERS)
    if finetune_epochs and not src.meta.dataset:
        raise BigModelError(f"{source} records no dataset to fine-tune on; pass --finetune-epochs 0")
    dst = destination(source, out, f"{'structured' if structured else 'pruned'}{round(100 * sparsity)}")
    kind = "structured" if structured else "unstructured"

    with tempfile.TemporaryDirectory(prefix="bigmodel-prune-") as work:
        current = src.path
        if structured:
            model, arch = prune_structured(src.module, src.meta.architecture, sparsity)  # type: ignore[arg-type]
            current = _stage(src, model, arch, Path(work) / "pruned")
            if finetune_epochs:
                current = _finetune(
                    src, current, Path(work) / "tuned", finetune_epochs, workers, False, progress
                )
            plan = [sparsity]
        else:
            plan = schedule(sparsity, min(steps, finetune_epochs) if finetune_epochs else 1)
            epochs = _split(finetune_epochs, len(plan))
            for i, (s, e) in enumerate(zip(plan, epochs, strict=True)):
                step = artifacts.load_model(current).module
                layers = prune_unstructured(step, s, scoring)
                arch = {**src.meta.architecture, "compact": layers}
                current = _stage(src, step, arch, Path(work) / f"step{i}")
                if e:
                    current = _finetune(src, current, Path(work) / f"tuned{i}", e, workers, True, progress)
        final = artifacts.load_model(current)
        final_sparsity = _sparsity(final.module)
        params = {
            "kind": kind,
            "sparsity": sparsity,
            "measured_sparsity": final_sparsity,
            "scoring": None if structured else scoring,
            "schedule": plan,
            "finetune_epochs": finetune_epochs,
            "workers": workers,
        }
        meta = derived_meta(
            src,
            architecture=final.meta.architecture,
            method="prune",
            params=params,
            metrics=final.meta.metrics,
        )
        with building(dst) as tmp:
            artifacts.write_model_dir(tmp, final.module, meta, state=compact_state(final.module))
    report = side_by_side(*profile_all([source, dst], threads=threads, runs=runs))
    return {**report, "model_dir": str(dst), "params": params}


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _sparsity(model: nn.Module) -> float:
    ws = [m.weight for m in linear_layers(model).values()]
    return float(sum(int((w == 0).sum()) for w in ws) / max(sum(w.numel() for w in ws), 1))


def _stage(src: artifacts.LoadedModel, model: nn.Module, arch: dict[str, Any], path: Path) -> Path:
    meta = derived_meta(src, architecture=arch, method="prune", params={})
    artifacts.write_model_dir(path, model, meta, state=compact_state(model))
    return path


def _finetune(
    src: artifacts.LoadedModel,
    start: Path,
    run_dir: Path,
    epochs: int,
    workers: int,
    masks: bool,
    progress: bool,
) -> Path:
    """Fine-tune through the normal trainer, from ``start``, on the source's data and optimizer."""
    assert src.meta.dataset is not None
    base = dict(src.meta.config or {})
    cfg = validate(base) if base else TrainConfig()
    data = cfg.data.model_copy(update={"dataset": src.meta.dataset["path"]})
    # The pruned model's own shape comes with it: the source's hidden/activation/size do not apply.
    model = ModelConfig(name=cfg.model.name, init_from=str(start), keep_sparsity=masks)
    # DDP (the default strategy): a pruned MLP is small, and its masks live on whole tensors
    dist = DistConfig(workers=workers, threads=cfg.dist.threads, timeout_s=cfg.dist.timeout_s)
    tuned = cfg.model_copy(
        update={
            "data": data,
            "model": model,
            "dist": dist,
            "distill": None,
            "epochs": epochs,
            "until_converged": False,
            "run_dir": str(run_dir),
            "resume": False,
            "checkpoint_every": 0,
            "progress": progress,
        }
    )
    train(validate(tuned.model_dump(mode="json")))
    return run_dir
