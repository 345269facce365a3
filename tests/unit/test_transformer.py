import pytest
import torch

from bigmodel.models import SIZES, build_model, transformer_architecture
from bigmodel.models.transformer import transformer_params


def test_named_sizes_reach_100m_parameters():
    counts = {s: transformer_params(s, context=256) for s in SIZES}
    assert counts["tiny"] < 100_000 and counts["large"] >= 100_000_000
    assert list(counts.values()) == sorted(counts.values())
    tiny = build_model(transformer_architecture("tiny", 256))
    assert sum(p.numel() for p in tiny.parameters()) == counts["tiny"]


def test_causal_next_byte_logits():
    torch.manual_seed(0)
    model = build_model(transformer_architecture("tiny", context=16)).eval()
    x = torch.randint(0, 256, (3, 16))
    y = model(x)
    assert y.shape == (3, 16, 256)
    x2 = x.clone()
    x2[:, 9] = (x2[:, 9] + 1) % 256
    y2 = model(x2)
    assert torch.equal(y[:, :9], y2[:, :9])  # positions before 9 never see byte 9
    assert not torch.allclose(y[:, 9:], y2[:, 9:])
    with pytest.raises(ValueError, match="longer than the model's context"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_architecture_roundtrips_through_model_json():
    arch = transformer_architecture("mini", context=64, dropout=0.1)
    torch.manual_seed(1)
    a = build_model(arch)
    torch.manual_seed(1)
    b = build_model(dict(arch))
    assert all(
        torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
