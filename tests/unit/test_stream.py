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


def test_streaming_switches_pyarrow_to_the_system_allocator_unless_the_user_chose(synth: Path, monkeypatch):
    import pyarrow as pa

    before = pa.default_memory_pool()
    s = ParquetStream(synth, load_manifest(synth), "train", batch_size=64)
    try:
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
        next(iterate(s, 0))
        assert pa.default_memory_pool().backend_name == "mimalloc"  # the user's choice stands
        monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL")
        next(iterate(s, 0))
        assert pa.default_memory_pool().backend_name == "system"
    finally:
        pa.set_memory_pool(before)


def test_background_starts_reading_before_the_first_next_and_stops_when_dropped():
    import gc
    import itertools
    import threading

    from bigmodel.data.pipeline import background

    started = threading.Event()

    def items():
        started.set()
        yield from itertools.count()  # never ends: only stopping the pipeline ends the thread

    before = set(threading.enumerate())
    pipe = background(items(), 2)
    assert started.wait(5), "the producer thread should start reading at once"
    (thread,) = set(threading.enumerate()) - before
    assert next(pipe) == 0
    del pipe
    gc.collect()
    thread.join(5)
    assert not thread.is_alive(), "a dropped pipeline must stop its thread"

    before = set(threading.enumerate())
    never_read = background(items(), 2)  # dropped without a single next()
    (thread,) = set(threading.enumerate()) - before
    del never_read
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()


def test_epochs_starts_its_reader_when_called(synth: Path):
    import threading

    from bigmodel.data.stream import epochs

    before = set(threading.enumerate())
    each = epochs(_stream(synth), range(2))  # no next() yet: the model would be built now
    assert any(t.name == "bigmodel-prefetch" for t in set(threading.enumerate()) - before)
    rows = [sum(len(b.x) for b in batches) for batches in each]
    assert rows == [load_manifest(synth).split("train").rows] * 2


def test_closing_epochs_before_the_first_epoch_stops_its_threads(synth: Path):
    import threading

    from bigmodel.data.stream import epochs

    before = set(threading.enumerate())
    each = epochs(_stream(synth), range(2))  # as if building the model had failed right after
    assert [t for t in set(threading.enumerate()) - before if t.name == "bigmodel-prefetch"]
    each.close()
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
