"""One federated run, top to bottom: ``prepare_run``, then ``serve``, then ``finish``.

The parent checks everything a user can get wrong (dataset, partition, destination) and writes
the run directory's ``federated.json`` (``prepare_run``); then ``bigmodel.federation.federated``
either runs the server and all clients in this process (``serve`` with ``simulate``) or starts a
server process and one process per client that talk gRPC over 127.0.0.1 (``processes.py``, which
calls ``serve`` and ``make_client`` from here). Either way the server side ends the same: a normal
model directory (lineage ``federated``), ``metrics.jsonl`` (one record per round) and a plot.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bigmodel import artifacts, console, tasks
from bigmodel.data.builtin import resolve
from bigmodel.data.manifest import Manifest
from bigmodel.data.stream import ParquetStream, iterate
from bigmodel.errors import BigModelError
from bigmodel.federation.client import Client, LocalPlan, get_weights, set_weights
from bigmodel.federation.config import FederatedConfig, parse_partition
from bigmodel.federation.partition import partition
from bigmodel.federation.plots import round_plot
from bigmodel.federation.strategy import Coordinator
from bigmodel.fsutil import fresh_dir, write_json_atomic
from bigmodel.models import build_model, count_params, mlp_architecture, set_standardization
from bigmodel.tasks import TaskSpec

CONFIG_FILE = "federated.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class Context:
    root: Path
    manifest: Manifest
    spec: TaskSpec
    arch: dict[str, Any]


def context(cfg: FederatedConfig) -> Context:
    root, m = resolve(cfg.dataset, seed=cfg.seed)
    spec = TaskSpec(m.task, m.num_outputs, m.label_values, m.target_mean, m.target_std)
    arch = mlp_architecture(len(m.features), spec.num_outputs, cfg.hidden, cfg.activation)
    return Context(root, m, spec, arch)


def prepare_run(cfg: FederatedConfig) -> FederatedConfig:
    """Check the config against the dataset and claim the run directory (parent only)."""
    ctx = context(cfg)
    kind, _ = parse_partition(cfg.partition)
    if kind == "dirichlet" and ctx.spec.task == "regression":
        raise BigModelError(
            f"--partition {cfg.partition} skews labels; {cfg.dataset} is a regression task: use iid"
        )
    _, y = load_split(ctx, "train")
    shards(cfg, y)  # a partition that cannot be made fails here, before any process starts
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run_dir = Path(cfg.out) if cfg.out else Path("runs") / f"federated-{ctx.manifest.name}-{stamp}"
    if any((run_dir / f).exists() for f in (artifacts.META, METRICS_FILE, CONFIG_FILE)):
        raise BigModelError(
            f"output directory {run_dir} already holds a run; choose a new --out (nothing was overwritten)"
        )
    fresh_dir(run_dir, "output directory")
    cfg = cfg.model_copy(update={"out": str(run_dir)})
    write_json_atomic(run_dir / CONFIG_FILE, cfg.model_dump(mode="json"))
    return cfg


def load_split(ctx: Context, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A whole split in memory: (x (N, F) float32, y (N,) in the loss's dtype)."""
    n = ctx.manifest.split(split).rows
    stream = ParquetStream(ctx.root, ctx.manifest, split, batch_size=max(n, 1), shuffle=False)
    b = next(iterate(stream, 0, prefetch=0))
    return b.x.numpy(), b.y.numpy()


def shards(cfg: FederatedConfig, y: np.ndarray) -> list[np.ndarray]:
    kind, alpha = parse_partition(cfg.partition)
    return partition(y, cfg.clients, kind, alpha, cfg.seed)


def make_client(
    cfg: FederatedConfig, ctx: Context, cid: int, x: np.ndarray, y: np.ndarray, *, in_process: bool
) -> Client:
    """Client ``cid`` holding rows ``x, y`` (its shard only)."""
    plan = LocalPlan(cfg.strategy, cfg.local_epochs, cfg.batch_size, cfg.lr, cfg.mu, cfg.seed * 7919 + cid)
    m = ctx.manifest
    return Client(cid, x, y, ctx.spec, ctx.arch, m.mean, m.std, plan, cfg.faults.get(cid), in_process)


def client_rows(cfg: FederatedConfig, ctx: Context, cid: int) -> tuple[np.ndarray, np.ndarray]:
    """What client process ``cid`` keeps: its own rows of the training split (the rest is dropped)."""
    x, y = load_split(ctx, "train")
    rows = shards(cfg, y)[cid]
    return x[rows], y[rows]


def serve(cfg: FederatedConfig, address: str | None = None) -> dict[str, Any]:
    """The server side: in-process clients (address None) or ``start_server`` on ``address``."""
    ctx = context(cfg)
    run_dir = Path(str(cfg.out))
    # Flower logs every round at INFO and a deprecation banner at WARNING; our round records and
    # warnings say what happened.
    logging.getLogger("flwr").setLevel(logging.ERROR)
    torch.manual_seed(cfg.seed)
    model = build_model(ctx.arch)
    set_standardization(model, ctx.manifest.mean, ctx.manifest.std)
    xv, yv = (torch.from_numpy(a) for a in load_split(ctx, "val"))

    @torch.no_grad()
    def evaluate_fn(weights: list[np.ndarray]) -> dict[str, float]:
        set_weights(model, weights)
        model.eval()
        return tasks.metrics(ctx.spec, model(xv), yv)

    records: list[dict[str, Any]] = []
    say = console.err.print
    with console.progress_bar("federated rounds", cfg.rounds, enabled=cfg.progress) as advance:

        def on_round(r: dict[str, Any]) -> None:
            records.append(r)
            with open(run_dir / METRICS_FILE, "a") as f:
                f.write(json.dumps(r) + "\n")
            for e in r["excluded"]:
                say(f"warning: round {r['round']}: client {e['client']} excluded: {e['reason']}")
            if r["dropped"]:
                say(
                    f"warning: round {r['round']}: {r['dropped']} client(s) dropped: {'; '.join(r['dropped_reasons'])}"
                )
            if r["round"] > 0:
                metric = ctx.spec.primary_metric
                advance(1, info=f"val {metric} {r.get('val_' + metric, float('nan')):.4f}")

        strategy = Coordinator(cfg, get_weights(model), evaluate_fn, on_round)
        if address is None:
            from bigmodel.federation.simulate import simulate

            x, y = load_split(ctx, "train")
            clients = [
                make_client(cfg, ctx, k, x[rows], y[rows], in_process=True)
                for k, rows in enumerate(shards(cfg, y))
            ]
            simulate(strategy, clients, cfg.rounds)
        else:
            from flwr.server import ServerConfig, SimpleClientManager, start_server

            start_server(
                server_address=address,
                config=ServerConfig(num_rounds=cfg.rounds, round_timeout=cfg.round_timeout_s),
                strategy=strategy,
                client_manager=SimpleClientManager(),
            )
    if strategy.stopped:
        say(f"warning: stopped after round {records[-1]['round']}: {strategy.stopped}")
    set_weights(model, strategy.weights)
    world = 1 if address is None else cfg.clients + 1
    return finish(cfg, ctx, model, records, strategy.reached, strategy.stopped, world=world)


def finish(
    cfg: FederatedConfig,
    ctx: Context,
    model: torch.nn.Module,
    records: list[dict[str, Any]],
    reached: int | None,
    stopped: str | None,
    world: int,
) -> dict[str, Any]:
    """Write the model directory, the plot and summary.json; return the summary."""
    run_dir = Path(str(cfg.out))
    last = records[-1]
    metrics = {k.removeprefix("val_"): v for k, v in last.items() if k.startswith("val_")}
    trained = [r for r in records if r["round"] > 0]
    summary: dict[str, Any] = {
        "metrics": metrics,
        "rounds": last["round"],
        "rounds_to_target": reached,
        "stopped": stopped,
        "clients": cfg.clients,
        "world_size": world,
        "mode": cfg.mode,
        "strategy": cfg.strategy,
        "partition": cfg.partition,
        "dropped": sum(r["dropped"] for r in trained),
        "excluded": sum(len(r["excluded"]) for r in trained),
        "seconds": last["seconds"],
        "params": count_params(model),
        "run_dir": str(run_dir),
    }
    m = ctx.manifest
    meta = artifacts.ModelMeta(
        architecture=ctx.arch,
        task=ctx.spec.to_json(),
        features=m.features,
        label=m.label,
        preprocessing={"mean": m.mean, "std": m.std},
        metrics=metrics,
        config=cfg.model_dump(mode="json"),
        dataset={"path": str(ctx.root), "name": m.name, "content_hash": m.content_hash},
        lineage=artifacts.Lineage(
            method="federated",
            data_manifest_hash=m.content_hash,
            params={
                k: getattr(cfg, k)
                for k in (
                    "strategy",
                    "clients",
                    "rounds",
                    "fraction",
                    "partition",
                    "local_epochs",
                    "batch_size",
                    "lr",
                    "mu",
                    "dp_clip",
                    "dp_noise",
                    "mode",
                    "seed",
                )
            },
        ),
    )
    artifacts.write_model_dir(run_dir, model, meta)
    metric = ctx.spec.primary_metric
    round_plot(
        records,
        metric,
        run_dir / f"{metric}.png",
        title=f"{m.name}: {cfg.strategy}, {cfg.clients} clients, {cfg.partition}",
    )
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    return summary
