"""``data prepare --task lm --engine spark`` beside the local engine: text for a language model.

The source is the Python standard library's source (what the built-in ``pysource`` reads), copied
into 16 files until it reaches ``BENCH_SPARK_TEXT_MB`` (default 256; the quick run 16), cut into
rows of 257 bytes. Wall time and the driver's peak RSS of each engine in a fresh process (the
Spark driver's JVM beside it: in ``local[2]`` it also runs the executors), and whether the two
datasets' content hashes are equal.

    BENCH_SPARK_TEXT_MB=64 python benchmarks/bench_prepare_spark_text.py
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from bench_prepare_spark import engine_rows, prepare_in_child
from bigmodel.data.text import python_source_files

FILES = 16


def source(root: Path, mb: int) -> Path:
    text = b"".join(p.read_bytes() + b"\n" for p in python_source_files())
    src = root / "text"
    src.mkdir()
    per = mb * 2**20 // FILES
    for i in range(FILES):
        with open(src / f"part{i:02d}.py", "wb") as f:
            left = per
            while left > 0:
                chunk = text[: min(left, len(text))]
                f.write(chunk)
                left -= len(chunk)
    return src


def run() -> dict:
    mb = int(os.environ.get("BENCH_SPARK_TEXT_MB", "16" if os.environ.get("BENCH_QUICK") else "256"))
    work = Path(tempfile.mkdtemp(prefix="bench-prepare-spark-text-"))
    try:
        src = source(work, mb)
        res = {e: prepare_in_child(src, work / e, e, task="lm", context=256) for e in ("local", "spark")}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = list(engine_rows(res).values())
    same = res["local"]["hash"] == res["spark"]["hash"]
    return {
        "title": "Data prepare --task lm: --engine spark beside --engine local",
        "header": ["engine", "wall time", "driver peak RSS"],
        "rows": rows,
        "notes": [
            f"{mb} MiB of Python source in {FILES} files, context 256 (rows of 257 bytes), shuffled, "
            f"seed 0; content hashes {'equal' if same else 'DIFFER'}.",
            "The Spark time includes starting its JVM (about 10 s here).",
        ],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
