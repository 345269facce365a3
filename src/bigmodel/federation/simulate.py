"""Many clients on one machine: Flower's own server loop with in-process client proxies.

Flower's simulation engine runs clients as Ray actors; Ray installs here but takes ~13 s to start
on a small machine, longer than a whole demo run. Flower's ``Server`` does not care how a
``ClientProxy`` reaches its client, so this module plugs in a proxy that calls the client directly
(through Flower's message types, serialisation included): sampling, failures, screening and
aggregation are the very code the gRPC deployment runs.
"""

from __future__ import annotations

from collections.abc import Sequence

from flwr.client import NumPyClient
from flwr.common import (
    DisconnectRes,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetParametersIns,
    GetParametersRes,
    GetPropertiesIns,
    GetPropertiesRes,
    ReconnectIns,
)
from flwr.server import Server, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy


class InProcessProxy(ClientProxy):
    """A client proxy whose 'network' is a function call."""

    def __init__(self, cid: str, client: NumPyClient):
        super().__init__(cid)
        self.client = client.to_client()

    def get_properties(
        self, ins: GetPropertiesIns, timeout: float | None, group_id: int | None
    ) -> GetPropertiesRes:
        return self.client.get_properties(ins)

    def get_parameters(
        self, ins: GetParametersIns, timeout: float | None, group_id: int | None
    ) -> GetParametersRes:
        return self.client.get_parameters(ins)

    def fit(self, ins: FitIns, timeout: float | None, group_id: int | None) -> FitRes:
        return self.client.fit(ins)

    def evaluate(self, ins: EvaluateIns, timeout: float | None, group_id: int | None) -> EvaluateRes:
        return self.client.evaluate(ins)

    def reconnect(self, ins: ReconnectIns, timeout: float | None, group_id: int | None) -> DisconnectRes:
        return DisconnectRes(reason="simulation")


def simulate(strategy: Strategy, clients: Sequence[NumPyClient], rounds: int, *, workers: int = 1) -> None:
    """Run ``rounds`` rounds of ``strategy`` over in-process ``clients`` (``workers`` fit at once)."""
    manager = SimpleClientManager()
    for i, c in enumerate(clients):
        manager.register(InProcessProxy(f"{i:06d}", c))  # zero-padded: sorted ids are client order
    server = Server(client_manager=manager, strategy=strategy)
    server.set_max_workers(workers)
    server.fit(num_rounds=rounds, timeout=None)
