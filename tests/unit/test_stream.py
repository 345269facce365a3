from pathlib import Path

import numpy as np
import pytest
import torch

from bigmodel.data import ParquetStream, generate_synthetic, iterate, load_manifest


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("s") / "synth"
    # small row groups so that windows span several of them and row groups straddle windows
    from bigmodel.data import shards

    old = shards.ROW_GROUP_ROWS
    shards.ROW_GROUP_ROWS = 97
    try:
        generate_synthetic(root, rows=3000, features=4, task="multiclass", classes=3, seed=3)
    finally:
        shards.ROW_GROUP_ROWS = old
    return root


def _stream(root: Path, **kw) -> ParquetStream:
    kw.setdefault("batch_size", 32)
    kw.setdefault("window_rows", 200)
    return ParquetStream(root, load_manifest(root), "train", **kw)


def _rows(batches) -> list[tuple[int, torch.Tensor]]:
    return [(b.index, b.x) for b in batches]


def test_one_epoch_is_a_permutation_of_the_split(synth: Path):
    s = _stream(synth, seed=1)
    xs = torch.cat([b.x for b in iterate(s, 0)])
    ref = torch.cat([b.x for b in iterate(_stream(synth, shuffle=False), 0)])
    assert len(xs) == s.n == len(ref)
    assert not torch.equal(xs, ref)
    assert torch.equal(xs[torch.argsort(xs[:, 0])], ref[torch.argsort(ref[:, 0])])


def test_order_depends_on_seed_and_epoch_only(synth: Path):
    a = torch.cat([b.x for b in iterate(_stream(synth, seed=1), 0)])
    assert torch.equal(a, torch.cat([b.x for b in iterate(_stream(synth, seed=1), 0, loader_workers=2)]))
    assert torch.equal(a, torch.cat([b.x for b in iterate(_stream(synth, seed=1), 0, prefetch=0)]))
    assert not torch.equal(a, torch.cat([b.x for b in iterate(_stream(synth, seed=1), 1)]))
    assert not torch.equal(a, torch.cat([b.x for b in iterate(_stream(synth, seed=2), 0)]))


@pytest.mark.parametrize(("world", "batch"), [(2, 32), (3, 32), (4, 7)])
def test_ranks_split_each_global_batch_disjointly(synth: Path, world: int, batch: int):
    single = list(iterate(_stream(synth, seed=5, batch_size=batch), 0))
    per_rank = [
        list(iterate(_stream(synth, seed=5, batch_size=batch, rank=r, world=world), 0)) for r in range(world)
    ]
    # every rank sees the same number of batches, so no collective can hang on unequal shards
    assert all(len(p) == len(single) for p in per_rank)
    for j, ref in enumerate(single):
        parts = [p[j] for p in per_rank]
        assert all(b.index == j and b.rows == ref.rows for b in parts)
        assert torch.equal(torch.cat([b.x for b in parts]), ref.x)
        assert torch.equal(torch.cat([b.y for b in parts]), ref.y)


def test_resume_mid_epoch_skips_exactly(synth: Path):
    full = list(iterate(_stream(synth, seed=1), 0))
    tail = list(iterate(_stream(synth, seed=1), 0, start_batch=17))
    assert [b.index for b in tail] == list(range(17, len(full)))
    assert all(torch.equal(a.x, b.x) for a, b in zip(full[17:], tail, strict=True))


def test_labels_and_dtypes(synth: Path):
    b = next(iterate(_stream(synth), 0))
    assert b.x.dtype == torch.float32 and b.y.dtype == torch.int64 and b.x.shape == (32, 4)
    assert set(np.unique(b.y.numpy())) <= {0, 1, 2}
