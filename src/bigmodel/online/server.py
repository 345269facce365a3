"""``POST /v2/models/{name}/feedback``: live labelled rows for the online learner, in the server.

Body: ``{"rows": [{<feature>: number, ..., <label column>: label}, ...]}`` (the label column is
the model's, e.g. ``target``; at most ``max_rows`` rows). The handler checks the rows against the
served version's schema (a 400 naming the field), puts them on a bounded queue and answers 202 at
once. One learner thread per model takes them off the queue, away from the event loop, so
inference never waits for learning; it runs ``OnlineLearner.learn`` and the policy
(``bigmodel.online.policy``) registers versions and moves the alias this server follows for the
model. The server's registry polling then switches to the new version like any alias move.

``GET`` on the same path reports the learner; ``/metrics`` gains ``bigmodel_online_*`` families.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bigmodel.errors import BigModelError
from bigmodel.explain.inputs import table_from_rows
from bigmodel.online.learner import OnlineLearner, Publisher, describe
from bigmodel.online.policy import OnlineConfig
from bigmodel.online.rows import labelled
from bigmodel.registry import DEFAULT_ALIAS
from bigmodel.serve.protocol import HTTPError
from bigmodel.serve.routes import json_response, read_json_object

if TYPE_CHECKING:
    from bigmodel.serve.app import RouteGroup, ServerState

log = logging.getLogger("bigmodel.online")
EVENTS = ("drift", "promote", "confirm", "rollback", "reset", "restart")


class Feedback:
    """One model's feedback queue (bounded in rows), its learner thread, and what /metrics shows."""

    def __init__(self, name: str, alias: str, registry: Any, cfg: OnlineConfig, max_queue_rows: int):
        self.name, self.alias, self.registry, self.cfg = name, alias, registry, cfg
        self.max_queue_rows = max_queue_rows
        self.q: queue.SimpleQueue[tuple[np.ndarray, np.ndarray] | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.queued = 0  # rows waiting
        self.accepted = 0  # rows queued so far (event loop)
        self.refused = 0  # rows refused because the queue was full (event loop)
        self.learned = 0  # rows learned (learner thread)
        self.failures = 0  # chunks the learner failed on (learner thread)
        self.snapshot: dict[str, Any] = {}  # the learner's summary after its last chunk
        self.thread = threading.Thread(target=self._run, name=f"online-{name}", daemon=True)
        self.thread.start()

    def offer(self, x: np.ndarray, y: np.ndarray) -> bool:
        """Queue rows without waiting; False when the queue is full (the caller answers 503)."""
        with self.lock:
            if self.queued + len(x) > self.max_queue_rows:
                self.refused += len(x)
                return False
            self.queued += len(x)
        self.accepted += len(x)
        self.q.put((x, y))
        return True

    def _run(self) -> None:
        learner: OnlineLearner | None = None
        while (item := self.q.get()) is not None:
            x, y = item
            with self.lock:
                self.queued -= len(x)
            try:
                if learner is None:
                    publisher = Publisher(self.registry, self.name, self.alias)
                    start = publisher.start_version()
                    learner = OnlineLearner(publisher.load(start), start, self.cfg, publisher)
                for e in learner.learn(x, y):
                    if e["event"] != "confirm":
                        log.warning("online %s@%s: %s", self.name, self.alias, describe(e))
                self.learned += len(x)
                summary = learner.summary()
                summary["events"] = summary["events"][-20:]
                self.snapshot = summary
            except Exception:  # the learner must not die; it restarts from the registry's state
                self.failures += 1
                learner = None
                log.exception("online learning on %s failed; starting again from the registry", self.name)

    async def stop(self) -> None:
        """Finish the chunk being learned, drop what is still queued (logged), end the thread."""
        dropped = 0
        while True:
            try:
                item = self.q.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                dropped += len(item[0])
        if dropped:
            log.warning("online %s: %d queued feedback rows were not learned (shutdown)", self.name, dropped)
        self.q.put(None)
        await asyncio.to_thread(self.thread.join, 60)

    def status(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "alias": self.alias,
            "accepted_rows": self.accepted,
            "refused_rows": self.refused,
            "queued_rows": self.queued,
            "learned_rows": self.learned,
            "failures": self.failures,
            "learner": self.snapshot,
        }


class Collector:
    """``bigmodel_online_*`` metric families from every model's counters, rendered on scrape."""

    def __init__(self, hubs: dict[str, Feedback]):
        self.hubs = hubs

    def collect(self) -> Iterator[Any]:
        rows = CounterMetricFamily(
            "bigmodel_online_feedback_rows", "Feedback rows by outcome", labels=["model", "outcome"]
        )
        queued = GaugeMetricFamily(
            "bigmodel_online_queue_rows", "Feedback rows waiting for the learner", labels=["model"]
        )
        events = CounterMetricFamily(
            "bigmodel_online_events", "Drifts detected and policy decisions", labels=["model", "event"]
        )
        score = GaugeMetricFamily(
            "bigmodel_online_score",
            "Prequential score (accuracy, or mse for regression) of the serving version and the learner",
            labels=["model", "model_role", "scope", "metric"],
        )
        version = GaugeMetricFamily(
            "bigmodel_online_serving_version", "Version the online policy serves", labels=["model", "alias"]
        )
        for name, hub in sorted(self.hubs.items()):
            for outcome, n in (
                ("accepted", hub.accepted),
                ("refused", hub.refused),
                ("learned", hub.learned),
            ):
                rows.add_metric([name, outcome], n)
            rows.add_metric([name, "failed_chunks"], hub.failures)
            queued.add_metric([name], hub.queued)
            s = hub.snapshot
            if not s:
                continue
            counts = {"drift": s["drifts"], "promote": s["promotions"], "rollback": s["rollbacks"]}
            counts.update(reset=s["resets"], restart=s["restarts"])
            for kind, n in counts.items():
                events.add_metric([name, kind], n)
            for role in ("serving", "learner"):
                score.add_metric([name, role, "stream", s["metric"]], s["prequential"][role])
                if s["window"]["rows"]:
                    score.add_metric([name, role, "window", s["metric"]], s["window"][role])
            if s["version"] is not None:
                version.add_metric([name, hub.alias], s["version"])
        yield from (rows, queued, events, score, version)


def feedback_routes(
    cfg: OnlineConfig | None, *, max_rows: int = 1000, max_queue_rows: int = 20000
) -> RouteGroup:
    """The feedback route group for ``create_app(..., extensions=[...])``; ``cfg=None``: the route
    exists but answers 404 saying online learning is off."""

    def group(state: ServerState) -> list[BaseRoute]:
        hubs: dict[str, Feedback] = {}
        if cfg is not None:
            state.metrics.registry.register(Collector(hubs))

            async def stop_all() -> None:
                await asyncio.gather(*(h.stop() for h in hubs.values()))

            state.on_shutdown.append(stop_all)

        def hub_for(name: str) -> Feedback:
            if name not in hubs:
                tracking = [t for t in state.repo.targets if t.ref.name == name and t.tracks]
                if not tracking:
                    raise HTTPError(
                        409,
                        f"model '{name}' is pinned to a version on this server; online learning needs "
                        f"a server that follows an alias (--models {name} or {name}@ALIAS)",
                    )
                alias = tracking[0].ref.alias or DEFAULT_ALIAS
                assert cfg is not None
                hubs[name] = Feedback(name, alias, state.repo.registry, cfg, max_queue_rows)
            return hubs[name]

        async def post(request: Request) -> Response:
            name = request.path_params["name"]
            if cfg is None:
                raise HTTPError(404, "online learning is off on this server: start it with --online")
            served = state.repo.get(name, None)  # 404 for a model not served here
            body = await read_json_object(request, state.cfg.max_body_bytes)
            unknown = sorted(set(body) - {"rows"})
            if unknown:
                raise HTTPError(
                    400, f"feedback: unknown field '{unknown[0]}' (the body is {{\"rows\": [...]}})"
                )
            rows = body.get("rows")
            if isinstance(rows, list) and len(rows) > max_rows:
                raise HTTPError(413, f"feedback has {len(rows)} rows; at most {max_rows} per request")
            meta = served.runtime.meta
            try:
                x, y = await asyncio.to_thread(
                    lambda: labelled(table_from_rows(rows, meta, "feedback", labels=True), meta, "feedback")
                )
            except BigModelError as err:
                raise HTTPError(400, str(err)) from None
            hub = hub_for(name)
            if not hub.offer(x, y):
                raise HTTPError(
                    503,
                    f"feedback queue of model {name} is full ({hub.queued} rows waiting); retry later",
                    {"Retry-After": "1"},
                )
            return json_response(
                {
                    "model": name,
                    "accepted": len(x),
                    "queued_rows": hub.queued,
                    "serving_version": served.version,
                },
                202,
            )

        async def get(request: Request) -> Response:
            name = request.path_params["name"]
            if cfg is None:
                raise HTTPError(404, "online learning is off on this server: start it with --online")
            state.repo.get(name, None)
            if name in hubs:
                return json_response(hubs[name].status())
            return json_response({"model": name, "accepted_rows": 0, "learned_rows": 0, "learner": {}})

        return [
            Route("/v2/models/{name}/feedback", post, methods=["POST"]),
            Route("/v2/models/{name}/feedback", get, methods=["GET"]),
        ]

    return group
