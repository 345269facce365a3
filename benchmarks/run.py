"""Run benchmarks and rewrite BENCHMARKS.md from their latest results.

    python benchmarks/run.py              # every benchmarks/bench_*.py
    python benchmarks/run.py trainer      # only bench_trainer.py
    python benchmarks/run.py --render     # only rebuild BENCHMARKS.md from benchmarks/results/*.json
    python benchmarks/run.py --quick lm   # BENCH_QUICK=1: benchmarks that know it run one short round

Each ``bench_<name>.py`` defines ``run() -> dict`` returning ``{"title", "rows": [[...], ...],
"header": [...], "notes": [...]}``; figures are ratios measured side by side in one run. The result,
stamped with the command, date and machine, goes to ``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOC = HERE.parent / "BENCHMARKS.md"


def machine() -> str:
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu} ({isa()}), {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def isa() -> str:
    """The vector and int8 instructions that decide which kernels run (int8 figures depend on it)."""
    import torch

    caps = torch.cpu.get_capabilities()
    vec = "AVX-512" if caps.get("avx512_f") else "AVX2" if caps.get("avx2") else "no AVX2"
    vnni = [n for n, k in (("AVX-512 VNNI", "avx512_vnni"), ("AVX-VNNI", "avx_vnni")) if caps.get(k)]
    return f"{vec}, {' + '.join(vnni) if vnni else 'no VNNI'}"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    sys.modules[path.stem] = module  # spawned child processes find the bench's functions by name
    spec.loader.exec_module(module)
    return module


def run_one(name: str) -> None:
    path = HERE / f"bench_{name}.py"
    print(f"== {name}", flush=True)
    t0 = time.perf_counter()
    result = _load(path).run()
    result.update(
        name=name,
        command=f"make bench (python benchmarks/run.py {'--quick ' if os.environ.get('BENCH_QUICK') else ''}{name})",
        date=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        machine=machine(),
        seconds=round(time.perf_counter() - t0, 1),
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(render_section(result), flush=True)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def render_section(r: dict) -> str:
    lines = [
        f"## {r['title']}",
        "",
        f"`{r['command']}` · {r['date']} · {r['machine']} · {r['seconds']} s",
        "",
    ]
    lines.append("| " + " | ".join(r["header"]) + " |")
    lines.append("|" + "---|" * len(r["header"]))
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in r["rows"]]
    lines += [""] + [f"- {n}" for n in r.get("notes", [])]
    return "\n".join(lines) + "\n"


def render() -> None:
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    order = ["trainer", "scaling", "loader", "prepare", "prepare_spark", "prepare_spark_text", "quality"]
    results.sort(key=lambda r: (order.index(r["name"]) if r["name"] in order else len(order), r["name"]))
    head = (
        "# Benchmarks\n\nLatest figures from `make bench` (each section says when and where it ran). "
        "Timing on a shared 2-core machine is noisy, so every figure that matters is a ratio of two "
        "things measured side by side in the same run.\n\n"
        "Which CPU: each section's line names it and, since 2026-12-06, its vector and int8 instructions; "
        "sections whose line names none ran on an Intel Xeon with AVX-512 VNNI. int8 speed-ups depend on "
        "them: without VNNI (AVX2-only CPUs) ONNX Runtime runs our int8 models on its uint8-weight "
        "kernels, which do not saturate there (bigmodel/onnxrt.py); their answers are the same as with "
        "VNNI, their speed is not measured here. all-MiniLM-L6-v2 int8 on the 230 shipped sentences, run "
        "under `qemu-x86_64 -cpu EPYC-Rome` (an AVX2-only AMD EPYC, emulated: accuracy only), 2026-12-06: "
        "mean cosine to fp32 0.9955 (worst 0.938), as on AVX-512 VNNI; with the int8 weights as stored "
        "(what such CPUs ran before) 0.9922.\n\n"
    )
    DOC.write_text(head + render_gpu() + "\n".join(render_section(r) for r in results))


def render_gpu() -> str:
    """The latest `make gpu-check` (benchmarks/results/gpu/check.json), or that none has run."""
    path = RESULTS / "gpu" / "check.json"
    if not path.exists():
        return (
            "## GPU paths (`make gpu-check`)\n\nNot run yet: no machine with a GPU was at hand "
            "(CUDA training, NCCL, FSDP, bf16 and `--compile` are untested on GPUs).\n\n"
        )
    r = json.loads(path.read_text())
    rows = [f"| {x['check']} | {x['status']} | {x['seconds']} | {x['detail']} |" for x in r["results"]]
    return (
        f"## GPU paths (`make gpu-check`)\n\n{r.get('date', '')} · {r['device']}\n\n"
        "| check | result | s | detail |\n|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("names", nargs="*")
    p.add_argument("--render", action="store_true")
    p.add_argument("--quick", action="store_true", help="set BENCH_QUICK=1 (lm, embed, grpc, tune)")
    args = p.parse_args()
    if args.quick:
        os.environ["BENCH_QUICK"] = "1"
    if not args.render:
        names = args.names or sorted(f.stem.removeprefix("bench_") for f in HERE.glob("bench_*.py"))
        for name in names:
            run_one(name)
    render()
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
