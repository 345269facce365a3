"""Pruning masks, the layer-collapse guard, the structured rebuild and compact sparse storage."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bigmodel import artifacts
from bigmodel.compress.prune import global_masks, lamp_scores, prune_structured, prune_unstructured, schedule
from bigmodel.models import build_model, count_params, mlp_architecture
from bigmodel.models.layers import SparseLinear, compact_state, pack_bits, unpack_bits
from bigmodel.tasks import TaskSpec


def test_lamp_keeps_every_layer_where_raw_magnitude_collapses_one():
    torch.manual_seed(0)
    # A wide fan-in layer has small weights (init scales as 1/sqrt(fan_in)); a big narrow one, large.
    weights = {"wide": torch.randn(64, 2048) * 0.01, "narrow": torch.randn(4096, 64) * 0.1}
    total = sum(w.numel() for w in weights.values())
    for scoring in ("magnitude", "lamp"):
        masks = global_masks(weights, 0.9, scoring)
        assert sum(int(m.sum()) for m in masks.values()) == total - round(0.9 * total)
        density = {n: float(m.float().mean()) for n, m in masks.items()}
        if scoring == "magnitude":
            assert density["wide"] < 0.001  # the layer is gone: the network would output a constant
        else:
            assert min(density.values()) > 0.02


def test_lamp_scores_rank_within_a_layer_and_top_is_one():
    w = torch.tensor([[3.0, -1.0], [0.5, 2.0]])
    s = lamp_scores(w)
    assert float(s.max()) == pytest.approx(1.0)  # the largest weight of a layer always survives
    order = torch.argsort(w.abs().flatten())
    assert torch.equal(torch.argsort(s.flatten()), order)


def test_schedule_is_gradual_and_ends_at_target():
    s = schedule(0.9, 4)
    assert s == sorted(s) and s[-1] == pytest.approx(0.9) and s[0] > 0.9 / 4


def test_bits_round_trip():
    m = torch.rand(1001) > 0.7
    packed = pack_bits(m)
    assert packed.dtype == torch.uint8 and packed.numel() == 126
    assert torch.equal(unpack_bits(packed, 1001), m)


def _meta(arch: dict) -> artifacts.ModelMeta:
    return artifacts.ModelMeta(
        architecture=arch, task=TaskSpec("multiclass", 4).to_json(), features=[f"f{i}" for i in range(32)]
    )


def test_sparse_storage_is_small_and_loads_back_dense(tmp_path: Path):
    torch.manual_seed(0)
    arch = mlp_architecture(32, 4, [256, 256])
    model = build_model(arch).eval()
    layers = prune_unstructured(model, 0.9)
    assert all(isinstance(m, SparseLinear) for m in model.net if isinstance(m, torch.nn.Linear))
    assert "net.0.weight" in model.state_dict()  # dense for training and checkpoints; compact on disk
    dense_state = {k: v.contiguous() for k, v in build_model(arch).state_dict().items()}
    save_file(dense_state, str(tmp_path / "dense.safetensors"))
    artifacts.write_model_dir(
        tmp_path / "m", model, _meta({**arch, "compact": layers}), state=compact_state(model)
    )
    dense_bytes = (tmp_path / "dense.safetensors").stat().st_size
    sparse_bytes = (tmp_path / "m" / "model.safetensors").stat().st_size
    assert sparse_bytes * 5 < dense_bytes  # 1 bit + 10% of 32 bits per weight
    back = artifacts.load_model(tmp_path / "m").module
    x = torch.randn(8, 32)
    assert torch.equal(back(x), model(x))
    zeros = sum(int((m.weight == 0).sum()) for m in back.net if isinstance(m, torch.nn.Linear))
    total = sum(m.weight.numel() for m in back.net if isinstance(m, torch.nn.Linear))
    assert zeros == round(0.9 * total)


def test_structured_rebuild_removes_dead_neurons_exactly():
    torch.manual_seed(0)
    arch = mlp_architecture(12, 3, [32, 16])
    model = build_model(arch).eval()
    lins = [m for m in model.net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():  # half the neurons of each hidden layer never fire
        lins[0].weight[::2] = 0
        lins[0].bias[::2] = 0
        lins[1].weight[::2] = 0
        lins[1].bias[::2] = 0
    small, new_arch = prune_structured(model, arch, 0.5)
    assert new_arch["hidden"] == [16, 8]
    assert count_params(small) < count_params(model) / 2.5
    x = torch.randn(20, 12)
    torch.testing.assert_close(small(x), model(x))
