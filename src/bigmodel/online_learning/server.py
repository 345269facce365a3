"""``POST /v2/models/{name}/feedback``: live labelled rows for the online learner, in the server.

Body: ``{"rows": [{<feature>: number, ..., <label column>: label}, ...]}`` (the label column is
the model's, e.g. ``target``; at most ``max_rows`` rows). The handler checks the rows against the
served version's schema (a 400 naming the field), puts them on a bounded queue and answers 202 at
once. One learner process per model takes them off the queue (no shared interpreter lock: inference
never waits for learning, it only shares the CPU); it runs ``OnlineLearner.learn`` and the policy
(``bigmodel.online_learning.policy``) registers versions and moves the alias this server follows for the
model. The server's registry polling then switches to the new version like any alias move.

``GET`` on the same path reports the learner; ``/metrics`` gains ``bigmodel_online_*`` families.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bigmodel.errors import BigModelError
from bigmodel.online_learning.learner import OnlineLearner, Publisher, describe, not_learnable
from bigmodel.online_learning.policy import OnlineConfig
from bigmodel.online_learning.rows import labelled
from bigmodel.rows import table_from_rows
from bigmodel.serve.extension import HTTPError, RouteGroup, Server, json_response

log = logging.getLogger("bigmodel.online_learning")


def _learner_main(
    inbox: Any, outbox: Any, stop: Any, registry: tuple[str, str], name: str, alias: str, cfg: dict[str, Any]
) -> None:
    """The learner process: chunks in, after each one a report out (rows, summary, event lines)."""
    # Ctrl-C reaches the whole process group; the server stops this process itself (stop event,
    # then a None in the inbox), so the interrupt would only print a traceback here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # already ignored from the start (see Feedback)
    import torch

    from bigmodel.registry import Registry

    torch.set_num_threads(1)
    reg = Registry(registry[0], db_url=registry[1])
    learner: OnlineLearner | None = None
    parent = multiprocessing.parent_process()
    while True:
        try:
            item = inbox.get(timeout=1.0)
        except queue.Empty:
            if parent is not None and not parent.is_alive():  # the server was killed: do not linger
                return
            continue
        if item is None:
            break
        x, y = item
        if stop.is_set():  # shutting down: what is still queued is dropped, not learned
            outbox.put(("dropped", len(x), None, []))
            continue
        try:
            if learner is None:
                publisher = Publisher(reg, name, alias)
                start = publisher.start_version()
                learner = OnlineLearner(publisher.load(start), start, OnlineConfig(**cfg), publisher)
            lines = [describe(e) for e in learner.learn(x, y) if e["event"] != "confirm"]
            summary = learner.summary()
            summary["events"] = summary["events"][-20:]
            outbox.put(("learned", len(x), summary, lines))
        except Exception as err:  # the learner must not die; it restarts from the registry's state
            learner = None
            outbox.put(
                ("failed", len(x), None, [f"learning failed ({type(err).__name__}: {err}); restarting"])
            )
    outbox.put(None)


class Feedback:
    """One model's feedback queue (bounded in rows), its learner process, and what /metrics shows.

    The learner runs in a process of its own (spawned on the first feedback), so learning never
    holds the server's interpreter lock: inference only shares the CPU with it."""

    def __init__(self, name: str, alias: str, registry: Any, cfg: OnlineConfig, max_queue_rows: int):
        self.name, self.alias, self.max_queue_rows = name, alias, max_queue_rows
        self.accepted = 0  # rows queued so far
        self.refused = 0  # rows refused because the queue was full
        self.learned = 0  # rows learned (reported by the learner)
        self.failed = 0  # rows the learner failed on
        self.dropped = 0  # rows still queued at shutdown
        self.snapshot: dict[str, Any] = {}  # the learner's summary after its last chunk
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        self.inbox, self.outbox, self.stopping = ctx.Queue(), ctx.Queue(), ctx.Event()
        where = (registry.location, registry.db_url)
        self.proc = ctx.Process(
            target=_learner_main,
            args=(self.inbox, self.outbox, self.stopping, where, name, alias, cfg.model_dump()),
            name=f"bigmodel-online-{name}",
            daemon=True,
        )
        # Ctrl-C reaches the whole process group, and the learner may still be importing when it
        # does: it starts with SIGINT ignored (kept across exec); the server stops it itself.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            self.proc.start()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        self.listener = threading.Thread(target=self._listen, name=f"online-{name}", daemon=True)
        self.listener.start()

    @property
    def queued(self) -> int:
        return self.accepted - self.learned - self.failed - self.dropped

    def offer(self, x: np.ndarray, y: np.ndarray) -> bool:
        """Queue rows without waiting; False when the queue is full (the caller answers 503)."""
        if self.queued + len(x) > self.max_queue_rows:
            self.refused += len(x)
            return False
        self.accepted += len(x)
        self.inbox.put((x, y))  # a feeder thread writes it to the pipe
        return True

    def _listen(self) -> None:
        while (report := self.outbox.get()) is not None:
            kind, rows, summary, lines = report
            for line in lines:
                log.warning("online %s@%s: %s", self.name, self.alias, line)
            if kind == "learned":
                self.snapshot = summary
                self.learned += rows
            elif kind == "failed":
                self.failed += rows
            else:
                self.dropped += rows

    async def stop(self) -> None:
        """Finish the chunk being learned, drop what is still queued (logged), end the process."""
        self.stopping.set()
        self.inbox.put(None)
        await asyncio.to_thread(self.proc.join, 60)
        if self.proc.is_alive():
            self.proc.kill()
        await asyncio.to_thread(self.listener.join, 5)
        if self.dropped:
            log.warning(
                "online %s: %d queued feedback rows were not learned (shutdown)", self.name, self.dropped
            )

    def status(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "alias": self.alias,
            "accepted_rows": self.accepted,
            "refused_rows": self.refused,
            "queued_rows": self.queued,
            "learned_rows": self.learned,
            "failed_rows": self.failed,
            "learner": self.snapshot,
        }


class Collector:
    """``bigmodel_online_*`` metric families from every model's counters, rendered on scrape."""

    def __init__(self, hubs: dict[str, Feedback], rejected: Counter[str]):
        self.hubs = hubs
        self.rejected = rejected

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
        rejected = CounterMetricFamily(
            "bigmodel_online_feedback_rejected_requests",
            "Feedback requests refused as invalid (4xx: bad rows or labels, too many rows)",
            labels=["model"],
        )
        for name, n in sorted(self.rejected.items()):
            rejected.add_metric([name], n)
        for name, hub in sorted(self.hubs.items()):
            for outcome, n in (
                ("accepted", hub.accepted),
                ("refused", hub.refused),
                ("learned", hub.learned),
                ("failed", hub.failed),
            ):
                rows.add_metric([name, outcome], n)
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
        yield from (rows, queued, events, score, version, rejected)


def feedback_routes(
    cfg: OnlineConfig | None, *, max_rows: int = 1000, max_queue_rows: int = 20000
) -> RouteGroup:
    """The feedback route group for ``create_app(..., extensions=[...])``; ``cfg=None``: the route
    exists but answers 404 saying online learning is off."""

    def group(server: Server) -> list[BaseRoute]:
        hubs: dict[str, Feedback] = {}
        rejected: Counter[str] = Counter()  # per model: feedback requests refused as invalid
        if cfg is not None:
            server.add_collector(Collector(hubs, rejected))

            async def stop_all() -> None:
                await asyncio.gather(*(h.stop() for h in hubs.values()))

            server.on_shutdown(stop_all)

        def hub_for(name: str) -> Feedback:
            if name not in hubs:
                alias = server.models.followed_alias(name)
                if alias is None:
                    raise HTTPError(
                        409,
                        f"model '{name}' is pinned to a version on this server; online learning needs "
                        f"a server that follows an alias (--models {name} or {name}@ALIAS)",
                    )
                assert cfg is not None
                hubs[name] = Feedback(name, alias, server.models.registry, cfg, max_queue_rows)
            return hubs[name]

        async def checked_rows(request: Request, served: Any) -> tuple[np.ndarray, np.ndarray]:
            """The body's labelled rows, or the 4xx that names what is wrong with them."""
            body = await server.read_json(request)
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
                return await asyncio.to_thread(
                    lambda: labelled(table_from_rows(rows, meta, "feedback", labels=True), meta, "feedback")
                )
            except BigModelError as err:
                raise HTTPError(400, str(err)) from None

        async def post(request: Request) -> Response:
            name = request.path_params["name"]
            if cfg is None:
                raise HTTPError(404, "online learning is off on this server: start it with --online")
            served = server.models.get(name)  # 404 for a model not served here
            why = not_learnable(served.runtime.meta)
            if why:  # refused now: accepted rows would only fail in the learner, unseen
                raise HTTPError(409, f"model '{name}' version {served.version}: {why}")
            try:
                x, y = await checked_rows(request, served)
            except HTTPError as err:
                if 400 <= err.status < 500:  # the client's rows, not the server's load
                    rejected[name] += 1
                raise
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
            server.models.get(name)  # 404 for a model not served here
            if name in hubs:
                return json_response({**hubs[name].status(), "rejected_requests": rejected[name]})
            return json_response(
                {
                    "model": name,
                    "accepted_rows": 0,
                    "learned_rows": 0,
                    "rejected_requests": rejected[name],
                    "learner": {},
                }
            )

        return [
            Route("/v2/models/{name}/feedback", post, methods=["POST"]),
            Route("/v2/models/{name}/feedback", get, methods=["GET"]),
        ]

    return group
