"""``bigmodel train`` and ``bigmodel evaluate``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bigmodel import config
from bigmodel.cli.common import add_json, emit, int_list
from bigmodel.console import kv_table
from bigmodel.errors import BigModelError

# flag -> config key; a flag left out (None) does not override the YAML file or a resumed run
FLAGS = {
    "dataset": "data.dataset",
    "model": "model.name",
    "size": "model.size",
    "hidden": "model.hidden",
    "compile": "model.compile",
    "optimizer": "optim.name",
    "lr": "optim.lr",
    "momentum": "optim.momentum",
    "batch_size": "batch_size",
    "epochs": "epochs",
    "until_converged": "until_converged",
    "workers": "dist.workers",
    "strategy": "dist.strategy",
    "max_restarts": "dist.max_restarts",
    "max_steps": "max_steps",
    "seed": "seed",
    "run_dir": "run_dir",
    "device": "device",
    "checkpoint_every": "checkpoint_every",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train a model (1 process, N local workers, or under torchrun)")
    p.add_argument("config", nargs="?", help="YAML config file (flags and --set override it)")
    p.add_argument(
        "--dataset",
        help="built-in name (breast_cancer, digits, synthetic, text, pysource) or prepared folder",
    )
    p.add_argument("--model", help="model family: mlp (tabular) | transformer (text, task lm)")
    p.add_argument("--size", help="transformer size: tiny | mini | small | base (86M) | large (152M)")
    p.add_argument("--hidden", type=int_list, help="hidden layer sizes, e.g. 10,10")
    p.add_argument("--optimizer", help="gd | sgd | adam | adamw")
    p.add_argument("--lr", type=float, help="default per optimizer: gd 0.1, sgd 0.01, adam and adamw 0.001")
    p.add_argument("--momentum", type=float)
    p.add_argument("--batch-size", type=int, help="global batch; each of N workers takes 1/N of it")
    p.add_argument("--epochs", type=int)
    p.add_argument(
        "--until-converged",
        action="store_true",
        default=None,
        help="stop when validation loss stops improving (tol, patience)",
    )
    p.add_argument("--workers", type=int, help="local worker processes (torch.distributed + DDP)")
    p.add_argument(
        "--strategy", help="ddp (replicate the model) | fsdp (shard parameters, gradients, optimizer state)"
    )
    p.add_argument(
        "--max-restarts",
        type=int,
        help="restart all workers up to K times when one dies; they resume from the last checkpoint",
    )
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (0: only at the end)")
    p.add_argument("--run-dir", help="where the model, metrics, plot and checkpoints go")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set optim.schedule=cosine (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_json(p)
    p.set_defaults(func=_train)

    c = sub.add_parser(
        "consolidate",
        help="a run's checkpoint (saved by any number of workers, sharded or not) -> one model directory",
    )
    c.add_argument("run_dir")
    c.add_argument("dst", help="new model directory (must not exist)")
    c.add_argument("--step", type=int, help="the checkpoint of this step (default: the newest)")
    add_json(c)
    c.set_defaults(func=_consolidate)

    e = sub.add_parser("evaluate", help="score a model directory on a dataset's validation split")
    e.add_argument("model_dir")
    e.add_argument("--dataset", help="default: the dataset the model was trained on")
    e.add_argument("--split", default="val")
    add_json(e)
    e.set_defaults(func=_evaluate)


def config_from_args(args: argparse.Namespace) -> config.TrainConfig:
    overrides: dict[str, Any] = {key: getattr(args, flag) for flag, key in FLAGS.items()}
    if args.no_progress:
        overrides["progress"] = False
    base = None
    if args.resume:
        if not args.run_dir:
            raise BigModelError("--resume needs --run-dir (the run to continue)")
        saved = Path(args.run_dir) / "config.yaml"
        if not saved.exists():
            raise BigModelError(f"--resume: {saved} not found; is {args.run_dir} a run directory?")
        base = config.load_yaml(saved)
        overrides["resume"] = True
    cfg = config.build(args.config, overrides, args.set, base=base)
    # The config cannot tell `--size tiny` from its default, so the flag is checked here.
    if args.size is not None and cfg.model.name != "transformer":
        raise BigModelError(
            f"--size applies to --model transformer; model {cfg.model.name} is shaped by --hidden"
        )
    return cfg


def _train(args: argparse.Namespace) -> None:
    from bigmodel.training import train

    cfg = config_from_args(args)
    result = train(cfg)

    def tables() -> list[Any]:
        m = result["metrics"]
        rows = {
            "dataset": cfg.data.dataset,
            "model": f"{_model_name(cfg)} ({result['params']:,} params)",
            "strategy": result["strategy"],
            "optimizer": f"{cfg.optim.name} lr={cfg.optim.lr:g}",
            "workers": result["world_size"],
            "epochs": result["epochs"],
            "steps": result["steps"],
            "train loss": result["train_loss"],
            **{f"val {k}": v for k, v in m.items()},
            "samples/s": result["samples_per_s"],
            "data wait": f"{100 * result['data_wait_fraction']:.1f}% of step time",
            "peak memory / worker": f"{result['peak_rss_mb']:,.0f} MiB",
            "train seconds": result["seconds"],
            "run dir": result["run_dir"],
        }
        if cfg.loss_plot:
            rows["loss plot"] = str(Path(result["run_dir"]) / "loss.png")
        return [kv_table("training summary", rows)]

    import os

    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank returns; one prints
        emit(args, result, tables)


def _model_name(cfg: config.TrainConfig) -> str:
    return f"transformer {cfg.model.size}" if cfg.model.name == "transformer" else f"mlp {cfg.model.hidden}"


def _consolidate(args: argparse.Namespace) -> None:
    from bigmodel.training import consolidate

    result = consolidate(args.run_dir, args.dst, step=args.step)
    rows = {k: v for k, v in result.items() if k != "metrics"}
    rows.update({f"val {k}": v for k, v in result["metrics"].items()})
    emit(args, result, lambda: [kv_table(f"consolidated {args.run_dir}", rows)])


def _evaluate(args: argparse.Namespace) -> None:
    from bigmodel.training import evaluate

    result = evaluate(args.model_dir, args.dataset, split=args.split)
    emit(
        args,
        result,
        lambda: [
            kv_table(
                f"{args.model_dir} on {result['dataset']} ({result['split']}, {result['rows']:,} rows)",
                result["metrics"],
            )
        ],
    )
