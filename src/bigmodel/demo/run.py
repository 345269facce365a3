"""``bigmodel demo``: the whole pipeline on a real dataset, as a new user would run it by hand."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from bigmodel import console
from bigmodel.config import TrainConfig
from bigmodel.data import prepare
from bigmodel.training import evaluate, train


def _export_breast_cancer(path: Path) -> None:
    """The Wisconsin breast cancer data (shipped inside scikit-learn) as a plain CSV file."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    cols = {name.replace(" ", "_"): bunch.data[:, j] for j, name in enumerate(bunch.feature_names)}
    cols["diagnosis"] = [str(bunch.target_names[t]) for t in bunch.target]
    path.parent.mkdir(parents=True, exist_ok=True)
    pcsv.write_csv(pa.table(cols), path)


def demo(
    workdir: str | Path | None = None,
    *,
    workers: int = 2,
    json_mode: bool = False,
    part: str = "all",
    lm_steps: int = 300,
) -> dict[str, Any]:
    """The tabular part (CSV -> shards -> DDP training -> compress -> registry -> serve -> online,
    federated, explain) and the text part (``bigmodel.demo.text``), or one of them (``part``)."""
    work = Path(workdir or Path("runs") / f"demo-{dt.datetime.now():%Y%m%d-%H%M%S}")
    say = console.err.print if json_mode else console.out.print
    out: dict[str, Any] = {"workdir": str(work)}
    if part in ("all", "tabular"):
        out.update(_tabular(work, workers=workers, say=say, json_mode=json_mode))
    if part in ("all", "text"):
        from bigmodel.demo.text import demo_text

        out["text"] = demo_text(work, say=say, json_mode=json_mode, steps=lm_steps)
    return out


def _tabular(work: Path, *, workers: int, say: Any, json_mode: bool) -> dict[str, Any]:

    say(
        f"[bold]1. data[/bold]  breast_cancer (569 real tumours, 30 features) -> CSV -> Parquet shards in {work}/data"
    )
    csv = work / "data" / "breast_cancer.csv"
    _export_breast_cancer(csv)
    manifest = prepare(str(csv), work / "data" / "breast_cancer", label="diagnosis", seed=0)
    splits = manifest.splits
    say(
        f"   task {manifest.task} ({', '.join(map(str, manifest.label_values or []))}), "
        f"{len(manifest.features)} features, {splits['train'].rows} train / {splits['val'].rows} val rows, "
        f"shuffled once by seed 0"
    )

    say(
        f"[bold]2. train[/bold] Dense(10, relu) -> Dense(10, relu) -> Dense(1, sigmoid), Adam, "
        f"DistributedDataParallel on {workers} worker processes"
    )
    cfg = TrainConfig.model_validate(
        {
            "data": {"dataset": str(work / "data" / "breast_cancer")},
            "dist": {"workers": workers},
            "run_dir": str(work / "runs" / "reference"),
        }
    )
    summary = train(cfg)
    say(
        f"   {summary['epochs']} epochs, {summary['steps']} steps on {summary['world_size']} workers, "
        f"train loss {summary['train_loss']:.4f}, {summary['samples_per_s']:,.0f} samples/s; "
        f"model directory {summary['run_dir']} (loss plot: loss.png)"
    )

    say("[bold]3. evaluate[/bold] the saved model directory on the validation split")
    ev = evaluate(summary["run_dir"])
    say(f"   val loss {ev['metrics']['loss']:.4f}, val accuracy {ev['metrics']['accuracy']:.3f}")

    from bigmodel.demo.compress import compression_step

    compressed = compression_step(summary["run_dir"], work / "compressed", json_mode=json_mode)

    from bigmodel.demo.serve import demo_serve

    served = demo_serve(
        work,
        summary["run_dir"],
        csv,
        label="diagnosis",
        say=say,
        compressed=compressed["dirs"],
        json_mode=json_mode,
    )

    from bigmodel.demo.online import demo_online

    learned = demo_online(work, csv, label="diagnosis", say=say, json_mode=json_mode)

    from bigmodel.demo.federated import federated_and_explain

    beyond = federated_and_explain(work, work / "data" / "breast_cancer", csv, say=say, json_mode=json_mode)

    rows = {
        "dataset": f"{manifest.name}: {manifest.splits['train'].rows} train / {manifest.splits['val'].rows} val rows",
        "workers": summary["world_size"],
        "epochs": summary["epochs"],
        "steps": summary["steps"],
        "train loss": summary["train_loss"],
        "val loss": ev["metrics"]["loss"],
        "val accuracy": ev["metrics"]["accuracy"],
        "samples/s": summary["samples_per_s"],
        "model dir": summary["run_dir"],
        "loss plot": str(Path(summary["run_dir"]) / "loss.png"),
        "online: production": f"version {learned['production_before']} -> {learned['production_after']}",
        "federated val accuracy": beyond["federated"]["metrics"]["accuracy"],
        "explanation plot": beyond["explain"]["png"],
    }
    console.show(console.kv_table("demo summary", rows), json_mode=json_mode)
    return {
        "train": summary,
        "evaluate": ev,
        "compress": compressed,
        "serve": served,
        "online": learned,
        **beyond,
    }
