"""``data prepare --engine spark`` beside the local engine (issue 20, section 4).

N rows x 64 features in 16 CSV files (N: ``BENCH_SPARK_ROWS``, default 20M as in the issue; the
quick run takes 200k): wall time and the driver's peak RSS for ``--engine local`` and
``--engine spark --master local[2]``, each in a fresh process, and the validation accuracy of the
same short training run on each prepared dataset (same seed). The two datasets have the same
content hash by construction, so their accuracies must agree.

    BENCH_SPARK_ROWS=200000 python benchmarks/bench_prepare_spark.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from bigmodel import TrainConfig, train

FILES, FEATURES = 16, 64

_CHILD = """
import json, sys, time
import psutil
from bigmodel.data import prepare

def hwm(pid):
    try:
        return next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return 0.0

t = time.perf_counter()
m = prepare(sys.argv[1], sys.argv[2], seed=0, **json.loads(sys.argv[3]))
secs = time.perf_counter() - t
# The Spark driver is this process and its JVM (in local[N] the JVM also runs the executors).
jvm = max((hwm(c.pid) for c in psutil.Process().children(recursive=True)), default=0.0)
print(json.dumps({"seconds": secs, "py_mib": hwm("self"), "jvm_mib": jvm, "hash": m.content_hash}))
"""


def source(root: Path, rows: int) -> Path:
    """16 CSV files of ``rows`` rows in all: 64 features, a binary label learnable from them."""
    src = root / "csv"
    src.mkdir()
    rng = np.random.default_rng(0)
    w = rng.normal(size=FEATURES)
    for i in range(FILES):
        n = rows // FILES + (1 if i < rows % FILES else 0)
        x = rng.normal(size=(n, FEATURES)).astype(np.float32).round(4)
        y = (x @ w + rng.normal(size=n) > 0).astype(np.int64)
        pcsv.write_csv(
            pa.table({**{f"f{j}": x[:, j] for j in range(FEATURES)}, "label": y}), src / f"p{i:02d}.csv"
        )
    return src


def prepare_in_child(src: Path, dst: Path, engine: str, **kwargs: object) -> dict:
    """``prepare(src, dst, seed=0, engine=engine, **kwargs)`` in a fresh process: wall time, peak RSS
    of the process (and of its JVM, for Spark), content hash."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    args = json.dumps({"engine": engine, **kwargs})
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(src), str(dst), args], capture_output=True, text=True, env=env
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def engine_rows(res: dict[str, dict]) -> dict[str, list[str]]:
    """Per engine: its flags, wall time and the driver's peak RSS (and its JVM's), as table cells."""
    return {
        e: [
            f"--engine {e}" + (" --master local[2]" if e == "spark" else ""),
            f"{r['seconds']:.1f} s",
            f"{r['py_mib']:,.0f} MiB" + (f" + JVM {r['jvm_mib']:,.0f} MiB" if e == "spark" else ""),
        ]
        for e, r in res.items()
    }


def val_accuracy(dataset: Path, run_dir: Path) -> float:
    cfg = TrainConfig.model_validate(
        {
            "data": {"dataset": str(dataset)},
            "batch_size": 256,
            "epochs": 1,
            "seed": 0,
            "optim": {"lr": 0.003},
            "checkpoint_every": 0,
            "run_dir": str(run_dir),
            "progress": False,
        }
    )
    return float(train(cfg)["metrics"]["accuracy"])


def run() -> dict:
    rows = int(os.environ.get("BENCH_SPARK_ROWS", "200000" if os.environ.get("BENCH_QUICK") else "20000000"))
    work = Path(tempfile.mkdtemp(prefix="bench-prepare-spark-"))
    try:
        src = source(work, rows)
        res = {e: prepare_in_child(src, work / e, e, label="label") for e in ("local", "spark")}
        acc = {e: val_accuracy(work / e, work / f"run-{e}") for e in res}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = [[*row, f"{acc[e]:.4f}"] for e, row in engine_rows(res).items()]
    same = res["local"]["hash"] == res["spark"]["hash"]
    notes = [
        f"{rows:,} rows x {FEATURES} features in {FILES} CSV files; content hashes "
        f"{'equal' if same else 'DIFFER'}; accuracy: the default MLP, 1 epoch, batch 256, seed 0.",
        "Spark driver RSS: the Python driver, and its JVM which in local[N] also runs the executors "
        "(on a cluster the executors' memory is elsewhere).",
    ]
    return {
        "title": "Data prepare: --engine spark beside --engine local",
        "header": ["engine", "wall time", "driver peak RSS", "val accuracy"],
        "rows": table,
        "notes": notes,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
