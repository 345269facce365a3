"""Out-of-core data: the streaming reader against a raw pyarrow scan, its memory, and training on
20M rows.

1. 5M rows x 64 float32 features: rows/s of ``iterate`` (shuffled, 1 rank, global batch 1024, two
   load threads; generated rows are stored in a random order, so the reader shuffles blocks of 4)
   vs a raw ``ParquetFile.read_row_group`` scan of the same files, interleaved, best of 3 each
   (target >= 0.8); the same with rows shuffled one by one (``shuffle_block=1``) and in file order;
   peak RSS of a fresh process streaming all of it (target < 1 GiB).
2. 20M rows x 64 features (``bigmodel data generate synthetic --rows 20000000 --features 64``,
   generated once into benchmarks/.work/): the default MLP trained on 2 workers, one full epoch at
   global batch 1024 and 20,000 steps at the default batch 32: samples/s, the fraction of step time
   spent waiting for data (target <= 5%) and peak RSS per worker (target < 1.5 GiB).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from bigmodel import TrainConfig, generate_synthetic, train
from bigmodel.data import ParquetStream, iterate, load_manifest

WORK = Path(__file__).resolve().parent / ".work"
BATCH = 1024


def dataset(rows: int) -> Path:
    root = WORK / f"synth-{rows // 1_000_000}m"
    if not (root / "manifest.json").exists():
        generate_synthetic(root, rows=rows, features=64, seed=0, progress=True)
    return root


def raw_scan(root: Path, memory_map: bool = False) -> int:
    n = 0
    for f in load_manifest(root).split("train").files:
        pf = pq.ParquetFile(root / f, memory_map=memory_map)
        for i in range(pf.num_row_groups):
            n += pf.read_row_group(i).num_rows
    return n


def raw_scan_mmap(root: Path) -> int:
    return raw_scan(root, memory_map=True)


def stream(root: Path, world: int = 1, shuffle: bool = True, block: int | None = None) -> int:
    s = ParquetStream(
        root,
        load_manifest(root),
        "train",
        batch_size=BATCH,
        world=world,
        seed=0,
        shuffle=shuffle,
        shuffle_block=block,
    )
    return sum(len(b.x) for b in iterate(s, 0))


def stream_in_order(root: Path) -> int:
    return stream(root, shuffle=False)


def stream_row_by_row(root: Path) -> int:
    return stream(root, block=1)


_RSS_CHILD = """
import json, sys
from benchmarks.bench_loader import stream
from bigmodel.training.dist import peak_rss_mb
from pathlib import Path
n = stream(Path(sys.argv[1]))
print(json.dumps({"rows": n, "peak_mib": peak_rss_mb()}))
"""


def peak_rss_streaming(root: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(root)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return r.ru_utime + r.ru_stime


def best_rate(fn, root: Path, reps: int = 3) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(rows/s, CPU seconds per million rows) of the fastest of ``reps`` runs."""
    best = (0.0, 0.0)
    for _ in range(reps):
        t, c = time.perf_counter(), cpu_seconds()
        n = fn(root)
        rate = n / (time.perf_counter() - t)
        if rate > best[0]:
            best = (rate, (cpu_seconds() - c) / n * 1e6)
    return best


def train_20m(root: Path, batch: int, max_steps: int, run: Path) -> dict:
    cfg = TrainConfig.model_validate(
        {
            "data": {"dataset": str(root)},
            "batch_size": batch,
            "epochs": 1,
            "max_steps": max_steps,
            "checkpoint_every": 0,
            "eval_rows": 200_000,
            "dist": {"workers": 2},
            "run_dir": str(run),
            "progress": False,
        }
    )
    return train(cfg)


def run() -> dict:
    d5 = dataset(5_000_000)
    fns = {
        "raw": raw_scan,
        "raw_mm": raw_scan_mmap,
        "stream": stream,
        "row_by_row": stream_row_by_row,
        "in_order": stream_in_order,
    }
    best = dict.fromkeys(fns, (0.0, 0.0))
    for _ in range(3):  # interleaved, so all see the same machine load
        for name, fn in fns.items():
            best[name] = max(best[name], best_rate(fn, d5, 1))
    (raw, raw_cpu), (raw_mm, _), (streamed, stream_cpu), (rows1, rows1_cpu), (in_order, order_cpu) = (
        best.values()
    )
    rank0, _ = best_rate(lambda r: stream(r, world=2), d5, 1)
    peak5 = peak_rss_streaming(d5)

    d20 = dataset(20_000_000)
    import shutil
    import tempfile

    runs = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    try:
        full = train_20m(d20, 1024, 0, runs / "full")
        small = train_20m(d20, 32, 20_000, runs / "b32")
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    ratio = streamed / raw
    cores = os.cpu_count() or 1
    rows = [
        ["raw pyarrow scan, 5M x 64", f"{raw / 1e6:.2f} M rows/s", f"CPU {raw_cpu:.3f} s / M rows", ""],
        ["raw pyarrow scan, memory-mapped", f"{raw_mm / 1e6:.2f} M rows/s", "", ""],
        [
            "stream (shuffled, 1 rank), 5M x 64",
            f"{streamed / 1e6:.2f} M rows/s",
            f"{ratio:.2f}x raw, {streamed / raw_mm:.2f}x memory-mapped raw; CPU {stream_cpu:.3f} s / M rows",
            "",
        ],
        [
            "stream, rows shuffled one by one (shuffle_block=1), 5M x 64",
            f"{rows1 / 1e6:.2f} M rows/s",
            f"{rows1 / raw:.2f}x raw; CPU {rows1_cpu:.3f} s / M rows",
            "",
        ],
        [
            "stream, shuffle off (file order, as validation reads), 5M x 64",
            f"{in_order / 1e6:.2f} M rows/s",
            f"{in_order / raw:.2f}x raw; CPU {order_cpu:.3f} s / M rows",
            "",
        ],
        ["stream, rank 0 of 2 (its half), 5M x 64", f"{rank0 / 1e6:.2f} M rows/s", "", ""],
        ["stream all 5M rows in a fresh process", "", "", f"{peak5:,.0f} MiB peak RSS"],
        [
            "train MLP 64-10-10-1, 2 workers, batch 1024, 1 epoch of 16M rows",
            f"{full['samples_per_s']:,.0f} samples/s",
            f"data wait {100 * full['data_wait_fraction']:.1f}%",
            f"{full['peak_rss_mb']:,.0f} MiB peak RSS / worker",
        ],
        [
            "train MLP 64-10-10-1, 2 workers, batch 32, 20k steps",
            f"{small['samples_per_s']:,.0f} samples/s",
            f"data wait {100 * small['data_wait_fraction']:.1f}%",
            f"{small['peak_rss_mb']:,.0f} MiB peak RSS / worker",
        ],
    ]
    worst_wait = max(full["data_wait_fraction"], small["data_wait_fraction"])
    worst_rss = max(full["peak_rss_mb"], small["peak_rss_mb"])
    notes = [
        f"Reader vs raw scan: {ratio:.2f}x (target >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'}); vs a "
        f"memory-mapped raw scan (how the reader itself reads): {streamed / raw_mm:.2f}x; shuffling rows one "
        f"by one {rows1 / raw:.2f}x; shuffling off {in_order / raw:.2f}x. The raw scan only decodes; the "
        "reader also shuffles: each window (whole row groups, ~64k rows) is decoded and its rows gathered "
        "in shuffled order into one (F, n) array by one thread, two windows at a time. Rows stored in a "
        "random order (prepared with the default shuffle, or generated) are shuffled in blocks of 4, which "
        f"moves 16-byte runs instead of single floats: {rows1_cpu / stream_cpu:.2f}x less CPU per row than "
        f"row by row. The shuffled reader does {stream_cpu / raw_cpu:.1f}x the raw scan's CPU work per "
        f"row; with all {cores} cores busy that caps it at {cores / stream_cpu:.2f} M rows/s = "
        f"{cores / stream_cpu * 1e6 / raw:.2f}x the raw scan (which itself keeps {raw_cpu * raw / 1e6:.1f} "
        "cores busy).",
        f"Peak RSS streaming 5M x 64: {peak5:,.0f} MiB (target < 1024: {'met' if peak5 < 1024 else 'NOT met'}).",
        f"20M rows: data wait <= {100 * worst_wait:.1f}% of step time (target <= 5%: "
        f"{'met' if worst_wait <= 0.05 else 'NOT met'}); peak RSS per worker {worst_rss:,.0f} MiB "
        f"(target < 1536: {'met' if worst_rss < 1536 else 'NOT met'}).",
        "Datasets are generated once into benchmarks/.work/ (~1.3 GB for 5M rows, ~5 GB for 20M).",
    ]
    return {
        "title": "Streaming loader and out-of-core training",
        "header": ["what", "rate", "vs", "memory"],
        "rows": rows,
        "notes": notes,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
