"""The server's side of a round, as a Flower Strategy: sample clients, screen and average their
updates, evaluate the new global model on the held-out split, record the round.

Flower drives it (``flwr.server.Server`` in a simulation, ``flwr.server.start_server`` over gRPC);
a client that fails or disconnects shows up in ``failures`` and the round goes on without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from bigmodel.federation.aggregate import Update, aggregate, screen
from bigmodel.federation.config import FederatedConfig, clients_per_round

FUTILE_ROUNDS = 3  # stop after this many rounds in a row with nothing to average

Evaluate = Callable[[list[np.ndarray]], dict[str, float]]
Record = Callable[[dict[str, Any]], None]


class Coordinator(Strategy):
    """FedAvg / FedProx / FedSGD rounds with update screening and optional central DP.

    ``evaluate_fn(weights) -> {"loss", "accuracy", ...}`` scores a global model on the server's
    held-out split; ``on_round(record)`` receives one dict per round (round 0: the initial model).
    """

    def __init__(
        self, cfg: FederatedConfig, initial: list[np.ndarray], evaluate_fn: Evaluate, on_round: Record
    ):
        super().__init__()
        self.cfg = cfg
        self.weights = [w.copy() for w in initial]  # the current global model
        self.evaluate_fn, self.on_round = evaluate_fn, on_round
        self.rng = np.random.default_rng([cfg.seed, 7])  # client sampling and DP noise
        self.reached: int | None = None  # the round that reached cfg.target_accuracy
        self.stopped: str | None = None  # why the run stopped early, if it did
        self.done = False  # the remaining rounds are no-ops
        self.futile = 0  # rounds in a row whose every update was excluded
        self.pending: dict[str, Any] = {}  # what aggregate_fit learned, for the round's record
        self.t0 = time.perf_counter()

    def __repr__(self) -> str:
        return f"Coordinator({self.cfg.strategy})"

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters:
        return ndarrays_to_parameters(self.weights)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        if self.done:
            return []
        if server_round == 1:  # let every client connect before the first draw
            client_manager.wait_for(self.cfg.clients, timeout=int(self.cfg.connect_timeout_s))
        available = sorted(client_manager.all().items())  # sorted: the seeded draw is reproducible
        if not available:
            return []
        m = min(len(available), clients_per_round(self.cfg.clients, self.cfg.fraction))
        chosen = sorted(self.rng.choice(len(available), size=m, replace=False).tolist())
        ins = FitIns(parameters, {"round": server_round})
        self.pending = {"available": len(available), "sampled": m, "t": time.perf_counter()}
        return [(available[i][1], ins) for i in chosen]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        updates = sorted(
            (
                Update(
                    int(str(r.metrics["cid"])),
                    parameters_to_ndarrays(r.parameters),
                    r.num_examples,
                    dict(r.metrics),
                )
                for _, r in results
            ),
            key=lambda u: u.cid,
        )
        s = screen(
            self.weights,
            updates,
            max_norm=self.cfg.max_update_norm,
            outlier_factor=self.cfg.norm_outlier_factor,
        )
        self.futile = self.futile + 1 if updates and not s.accepted else 0
        if self.futile >= FUTILE_ROUNDS:
            self.stopped = (
                f"every update was excluded for {FUTILE_ROUNDS} rounds in a row (last: "
                f"{s.excluded[-1]['reason']}); the client learning rate may be too high"
            )
        self.weights = aggregate(
            self.weights, s.accepted, dp_clip=self.cfg.dp_clip, dp_noise=self.cfg.dp_noise, rng=self.rng
        )
        n = sum(u.num_examples for u in s.accepted)
        loss_sum = sum(float(u.metrics["train_loss"]) * u.num_examples for u in s.accepted)
        self.pending.update(
            clients=[u.cid for u in s.accepted],
            dropped=len(failures),
            dropped_reasons=sorted({_describe(f) for f in failures}),
            excluded=s.excluded,
            train_loss=loss_sum / n if n else None,
            update_norm_median=float(np.median(list(s.norms.values()))) if s.norms else None,
        )
        return ndarrays_to_parameters(self.weights), {}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []  # evaluation is central, on the server's held-out split

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        if self.done:
            return None
        metrics = self.evaluate_fn(self.weights)
        p = self.pending
        record: dict[str, Any] = {
            "round": server_round,
            "clients_available": p.get("available", 0),
            "clients_sampled": p.get("sampled", 0),
            "clients_aggregated": len(p.get("clients", [])),
            "clients": p.get("clients", []),
            "dropped": p.get("dropped", 0),
            "dropped_reasons": p.get("dropped_reasons", []),
            "excluded": p.get("excluded", []),
            "train_loss": p.get("train_loss"),
            "update_norm_median": p.get("update_norm_median"),
            **{f"val_{k}": v for k, v in metrics.items()},
            "round_seconds": time.perf_counter() - p["t"] if "t" in p else 0.0,
            "seconds": time.perf_counter() - self.t0,
        }
        self.pending = {}
        self.on_round(record)
        target = self.cfg.target_accuracy
        if target is not None and server_round > 0 and metrics.get("accuracy", 0.0) >= target:
            self.reached = server_round
        self.done = self.reached is not None or self.stopped is not None
        return metrics["loss"], {k: v for k, v in metrics.items() if k != "loss"}


def _describe(failure: tuple[ClientProxy, FitRes] | BaseException) -> str:
    if isinstance(failure, BaseException):
        return f"{type(failure).__name__}: {str(failure).splitlines()[0] if str(failure) else ''}".rstrip(
            ": "
        )
    return f"client returned status {failure[1].status.code.name}"
