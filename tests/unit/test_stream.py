from pathlib import Path

import numpy as np
import pytest
import torch

from bigmodel.data import ParquetStream, generate_synthetic, iterate, load_manifest
from bigmodel.errors import BigModelError


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


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Row groups of 64 rows: most windows are whole blocks of 4 for every rank's share of a batch of 32."""
    from bigmodel.data import shards

    root = tmp_path_factory.mktemp("a") / "aligned"
    old, shards.ROW_GROUP_ROWS = shards.ROW_GROUP_ROWS, 64
    try:
        generate_synthetic(root, rows=1500, features=3, task="regression", seed=4)
    finally:
        shards.ROW_GROUP_ROWS = old
    return root


@pytest.mark.parametrize(
    ("data", "world", "batch", "window"),
    [
        ("synth", 2, 32, 200),
        ("synth", 3, 32, 200),
        ("synth", 4, 7, 200),
        ("aligned", 2, 32, 128),
        ("aligned", 2, 8, 1),
    ],
)
def test_ranks_split_each_global_batch_disjointly(data: str, world: int, batch: int, window: int, request):
    root = request.getfixturevalue(data)
    kw = dict(seed=5, batch_size=batch, window_rows=window)
    single = list(iterate(_stream(root, **kw), 0))
    per_rank = [list(iterate(_stream(root, rank=r, world=world, **kw), 0)) for r in range(world)]
    # every rank sees the same number of batches, so no collective can hang on unequal shards
    assert all(len(p) == len(single) for p in per_rank)
    for j, ref in enumerate(single):
        parts = [p[j] for p in per_rank]
        assert all(b.index == j and b.rows == ref.rows for b in parts)
        assert torch.equal(torch.cat([b.x for b in parts]), ref.x)
        assert torch.equal(torch.cat([b.y for b in parts]), ref.y)


@pytest.mark.parametrize("world", [1, 2])
def test_resume_mid_epoch_skips_exactly(synth: Path, world: int):
    for rank in range(world):
        full = list(iterate(_stream(synth, seed=1, rank=rank, world=world), 0))
        for start in (17, 18, len(full) - 1, len(full)):  # batch 18 starts in the middle of a window
            tail = list(iterate(_stream(synth, seed=1, rank=rank, world=world), 0, start_batch=start))
            assert [b.index for b in tail] == list(range(start, len(full)))
            assert all(torch.equal(a.x, b.x) for a, b in zip(full[start:], tail, strict=True))


def _stored_positions(root: Path, xs: torch.Tensor) -> np.ndarray:
    """Each row of xs -> its place in the split as stored (rows are told apart by their features)."""
    stored = torch.cat([b.x for b in iterate(_stream(root, shuffle=False), 0)])
    where = {tuple(r): i for i, r in enumerate(stored.tolist())}
    return np.array([where[tuple(r)] for r in xs.tolist()])


def test_shuffled_rows_stay_in_blocks_of_stored_rows_when_the_stored_order_is_random(
    synth: Path, aligned: Path
):
    assert load_manifest(synth).shuffled  # generated rows are random by construction
    assert _stream(synth).block == 4
    assert _stream(synth, window_rows=10**6).block == 1  # one window: row by row costs little
    for root in (synth, aligned):
        pos = _stored_positions(root, torch.cat([b.x for b in iterate(_stream(root, seed=3), 0)]))
        assert sorted(pos.tolist()) == list(range(len(pos)))
        starts = np.flatnonzero(np.diff(pos) != 1) + 1  # where a run of consecutive stored rows begins
        runs = np.diff(np.r_[0, starts, len(pos)])
        # whole blocks of 4; a window's last block may be short, and two blocks may happen to follow
        assert (runs % 4 == 0).mean() > 0.9 and np.median(runs) == 4
        # shuffle_block=1: rows on their own
        one = _stored_positions(
            root, torch.cat([b.x for b in iterate(_stream(root, seed=3, shuffle_block=1), 0)])
        )
        assert (np.diff(one) == 1).mean() < 0.05
    with pytest.raises(BigModelError, match="shuffle_block must be >= 1"):
        _stream(synth, shuffle_block=0)


def test_rows_kept_in_source_order_are_shuffled_one_by_one(tmp_path: Path):
    from bigmodel.data import prepare

    src = tmp_path / "src.csv"
    src.write_text("a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(600)))
    prepare(str(src), tmp_path / "kept", label="y", shuffle=False)
    s = _stream(tmp_path / "kept", seed=3)
    assert s.block == 1
    a = torch.cat([b.x for b in iterate(s, 0)])[:, 0].numpy()
    assert (np.diff(a) == 1).mean() < 0.05


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


def test_ordered_map_starts_at_once_and_stops_when_dropped():
    import gc
    import itertools
    import threading

    from bigmodel.data.pipeline import ordered_map

    started = threading.Event()

    def work(i: int) -> int:
        started.set()
        return i

    before = set(threading.enumerate())
    pipe = ordered_map(work, itertools.count(), 2, 2)  # never ends: only stopping it ends the threads
    assert started.wait(5), "the first items should be computed before the first next()"
    threads = set(threading.enumerate()) - before
    assert threads and all(t.name.startswith("bigmodel-load") for t in threads)
    assert [next(pipe), next(pipe)] == [0, 1]
    del pipe
    gc.collect()
    for t in threads:
        t.join(5)
        assert not t.is_alive(), "a dropped map must stop its threads"


def test_epochs_starts_its_reader_when_called(synth: Path):
    import threading

    from bigmodel.data.stream import epochs

    before = set(threading.enumerate())
    each = epochs(_stream(synth), range(2))  # no next() yet: the model would be built now
    assert any(t.name.startswith("bigmodel-load") for t in set(threading.enumerate()) - before)
    rows = [sum(len(b.x) for b in batches) for batches in each]
    assert rows == [load_manifest(synth).split("train").rows] * 2


def test_closing_epochs_before_the_first_epoch_stops_its_threads(synth: Path):
    import threading

    from bigmodel.data.stream import epochs

    before = set(threading.enumerate())
    each = epochs(_stream(synth), range(2))  # as if building the model had failed right after
    assert [t for t in set(threading.enumerate()) - before if t.name.startswith("bigmodel-load")]
    each.close()
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]


def test_ordered_map_keeps_the_order_runs_side_by_side_and_passes_errors_on():
    import random
    import threading
    import time

    from bigmodel.data.pipeline import ordered_map

    busy, most = set(), 0
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal most
        with lock:
            busy.add(i)
            most = max(most, len(busy))
        time.sleep(random.uniform(0, 0.01))
        with lock:
            busy.discard(i)
        if i == 30:
            raise ValueError("row group 30 is bad")
        return i * i

    pipe = ordered_map(work, range(30), 3, 2)
    assert list(pipe) == [i * i for i in range(30)]
    assert most == 3
    with pytest.raises(ValueError, match="row group 30"):
        list(ordered_map(work, range(40), 2, 2))


def test_an_epoch_whose_windows_stop_early_is_an_error_not_a_short_epoch(synth: Path):
    s = _stream(synth, seed=1)
    first = s.load(s.windows(0)[0], 0)  # as if the second window's load had failed and been caught
    with pytest.raises(BigModelError, match=r"this epoch's data ended after \d+ of \d+ batches"):
        list(s.batches(iter([first])))


def test_ordered_map_stops_its_threads_when_its_items_fail():
    import threading

    from bigmodel.data.pipeline import ordered_map

    def items():
        yield from (1, 2)
        raise OSError("listing the shards failed")

    before = set(threading.enumerate())
    pipe = ordered_map(lambda i: i, items(), 1, 0)
    with pytest.raises(OSError, match="listing the shards"):
        list(pipe)
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
