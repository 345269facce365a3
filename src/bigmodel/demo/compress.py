"""The demo's compression step: its model pruned, quantized and distilled, in one table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bigmodel import console
from bigmodel.compress.distill import distill
from bigmodel.compress.measure import profile_all
from bigmodel.compress.prune import prune
from bigmodel.compress.quantize import quantize
from bigmodel.compress.report import report_table


def compression_step(model_dir: str | Path, folder: str | Path, *, json_mode: bool = False) -> dict[str, Any]:
    """Prune (50%, fine-tuned), quantize (int8 on ONNX Runtime) and distil (a 4-unit student) the
    model in ``model_dir`` into ``folder``; measure all four side by side (1 thread)."""
    folder = Path(folder)
    say = console.err.print if json_mode else console.out.print
    say(
        "[bold]4. compress[/bold] the trained model: pruned 50% + fine-tuned, int8 on ONNX Runtime, distilled into Dense(4)"
    )
    pruned = prune(
        model_dir, sparsity=0.5, finetune_epochs=4, steps=2, out=folder / "pruned50", runs=10, progress=False
    )
    int8 = quantize(model_dir, method="dynamic", out=folder / "int8", runs=10)
    student = distill(model_dir, hidden=[4], epochs=40, out=folder / "student4", runs=10, progress=False)
    dirs = [str(model_dir), pruned["model_dir"], int8["model_dir"], student["model_dir"]]
    models = profile_all(dirs, threads=1, runs=50)
    console.show(report_table(models), json_mode=json_mode)
    return {"models": models, "dirs": {"pruned": dirs[1], "int8": dirs[2], "student": dirs[3]}}
