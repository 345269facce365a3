"""``bigmodel federated``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bigmodel.cli.common import add_json, emit, int_list
from bigmodel.console import kv_table
from bigmodel.errors import BigModelError


def _fault(text: str) -> tuple[int, str]:
    cid, sep, kind = text.partition(":")
    if not sep or not (cid.isascii() and cid.isdigit()) or kind not in ("nan", "huge", "crash"):
        raise argparse.ArgumentTypeError(f"expected CLIENT:nan|huge|crash, got {text!r}")
    return int(cid), kind


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "federated",
        help="train across clients that keep their data (Flower; simulated or real processes)",
        description="Each client trains on its own shard and sends back only weights; the server "
        "screens the updates (NaN, oversized), averages them and scores the global model.",
    )
    p.add_argument(
        "--dataset",
        help="default digits; a built-in name (breast_cancer, digits, synthetic) or prepared folder",
    )
    p.add_argument("--model", choices=["mlp"])
    p.add_argument("--hidden", type=int_list, help="hidden layer sizes, e.g. 64 or 64,32 (default 64)")
    p.add_argument("--clients", type=int, help="number of clients K (default 10)")
    p.add_argument("--rounds", type=int, help="communication rounds R (default 10)")
    p.add_argument(
        "--fraction", type=float, help="share of clients sampled per round C, in (0, 1] (default 1)"
    )
    p.add_argument("--partition", help="iid (default) | dirichlet:ALPHA (label skew, e.g. dirichlet:0.5)")
    p.add_argument("--strategy", help="fedavg (default) | fedprox | fedsgd")
    p.add_argument("--local-epochs", type=int, help="local epochs E per round (default 1)")
    p.add_argument("--batch-size", type=int, help="local minibatch B (default 10)")
    p.add_argument("--lr", type=float, help="client SGD learning rate (default 0.05)")
    p.add_argument("--mu", type=float, help="FedProx proximal weight (default 0.01)")
    p.add_argument("--max-update-norm", type=float, help="exclude updates whose L2 norm exceeds this")
    p.add_argument("--dp-clip", type=float, help="differential privacy: clip every update to this L2 norm")
    p.add_argument(
        "--dp-noise", type=float, help="differential privacy: Gaussian noise multiplier (needs --dp-clip)"
    )
    p.add_argument("--target-accuracy", type=float, help="stop once validation accuracy reaches this")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--simulate",
        dest="mode",
        action="store_const",
        const="simulate",
        help="all clients in this process (default)",
    )
    mode.add_argument(
        "--processes",
        dest="mode",
        action="store_const",
        const="processes",
        help="a server and K client processes over gRPC on 127.0.0.1",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run and model directory (default runs/federated-<dataset>-<time>)")
    p.add_argument(
        "--inject-fault",
        type=_fault,
        action="append",
        default=[],
        metavar="CLIENT:KIND",
        help="testing: make a client misbehave (nan, huge, crash); repeatable",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json(p)
    p.set_defaults(func=_federated)


def _federated(args: argparse.Namespace) -> None:
    from bigmodel.federation import federated
    from bigmodel.federation.config import clients_per_round, validate

    flags = (
        "dataset",
        "model",
        "hidden",
        "clients",
        "rounds",
        "fraction",
        "partition",
        "strategy",
        "local_epochs",
        "batch_size",
        "lr",
        "mu",
        "max_update_norm",
        "dp_clip",
        "dp_noise",
        "target_accuracy",
        "mode",
        "seed",
        "out",
    )
    fields: dict[str, Any] = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    faults: dict[int, str] = {}
    for cid, kind in args.inject_fault:
        if cid in faults:
            raise BigModelError(f"--inject-fault names client {cid} twice")
        faults[cid] = kind
    cfg = validate({**fields, "faults": faults, "progress": not args.no_progress})
    result = federated(cfg)

    def tables() -> list[Any]:
        rows = {
            "dataset": cfg.dataset,
            "model": f"{cfg.model} {cfg.hidden} ({result['params']:,} params)",
            "strategy": cfg.strategy + (f" mu={cfg.mu:g}" if cfg.strategy == "fedprox" else ""),
            "mode": f"{result['mode']} ({result['world_size']} processes)",
            "clients": f"{cfg.clients} ({clients_per_round(cfg.clients, cfg.fraction)} sampled per round, C={cfg.fraction:g}), "
            f"partition {cfg.partition}",
            "rounds": result["rounds"],
            **({"rounds to target": result["rounds_to_target"]} if cfg.target_accuracy else {}),
            **({"stopped early": result["stopped"]} if result["stopped"] else {}),
            **{f"val {k}": v for k, v in result["metrics"].items()},
            "dropped (client-rounds)": result["dropped"],
            "excluded updates": result["excluded"],
            "seconds": result["seconds"],
            "run dir": result["run_dir"],
            "rounds log": str(Path(result["run_dir"]) / "metrics.jsonl"),
        }
        return [kv_table("federated training summary", rows)]

    emit(args, result, tables)
