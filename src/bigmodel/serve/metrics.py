"""Observability: Prometheus metrics and a structured (JSON lines) access log.

The hot path only bumps plain Python counters (one event loop thread, so no locks); a custom
collector turns them into Prometheus families when ``/metrics`` is scraped. That keeps a request's
metric cost near a microsecond instead of the several of prometheus_client's labelled children.
"""

from __future__ import annotations

import asyncio
import bisect
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.process_collector import ProcessCollector

from bigmodel.errors import BigModelError
from bigmodel.fsutil import make_dir

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
UNKNOWN = "_unknown"  # the model label for requests naming no served model (keeps label sets bounded)


class Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last bucket is +Inf
        self.total = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += 1
        self.total += v

    def family_args(self) -> tuple[list[tuple[str, float]], float]:
        acc, buckets = 0.0, []
        for bound, c in zip((*self.bounds, float("inf")), self.counts, strict=True):
            acc += c
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), acc))
        return buckets, self.total


TOKEN_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class GenerationStats:
    """One LM version's generation: time to first token, inter-token latency, tokens. Observed
    from its scheduler's worker thread (one writer; a scrape reads, so no lock is needed)."""

    def __init__(self) -> None:
        self.ttft = Histogram(TOKEN_BUCKETS)
        self.itl = Histogram(TOKEN_BUCKETS)
        self.tokens = 0
        self.scheduler: Any = None  # running/waiting sequences are read from it on scrape

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)
        self.tokens += 1

    def next_token(self, seconds: float) -> None:
        self.itl.observe(seconds)
        self.tokens += 1


class Metrics:
    """Counters keyed by (model, version[, status]); rendered on scrape."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], Histogram] = {}
        self.queue: dict[tuple[str, str], Histogram] = {}
        self.batch: dict[tuple[str, str], Histogram] = {}
        self.in_flight = 0
        self.generation: dict[tuple[str, str], GenerationStats] = {}
        self.loaded: dict[tuple[str, str], str] = {}  # (model, version) -> runtime
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)

    def request(self, model: str, version: str, status: int, seconds: float, queued: float | None) -> None:
        rkey = (model, version, str(status))
        self.requests[rkey] = self.requests.get(rkey, 0) + 1
        mv = (model, version)
        h = self.latency.get(mv) or self.latency.setdefault(mv, Histogram(LATENCY_BUCKETS))
        h.observe(seconds)
        if queued is not None:
            q = self.queue.get(mv) or self.queue.setdefault(mv, Histogram(LATENCY_BUCKETS))
            q.observe(queued)

    def batch_observer(self, model: str, version: str) -> Any:
        h = self.batch.setdefault((model, version), Histogram(BATCH_BUCKETS))
        return h.observe

    def generation_observer(self, model: str, version: str) -> GenerationStats:
        return self.generation.setdefault((model, version), GenerationStats())

    def _generation_families(self) -> Iterator[Any]:
        table = sorted(self.generation.items())
        for name, doc, attr in (
            ("bigmodel_generation_time_to_first_token_seconds", "Time from request to first token", "ttft"),
            (
                "bigmodel_generation_inter_token_latency_seconds",
                "Time between two tokens of a sequence",
                "itl",
            ),
        ):
            h = HistogramMetricFamily(name, doc, labels=["model", "version"])
            for mv, stats in table:
                buckets, total = getattr(stats, attr).family_args()
                h.add_metric(list(mv), buckets, total)
            yield h
        c = CounterMetricFamily("bigmodel_generation_tokens", "Tokens generated", labels=["model", "version"])
        for mv, stats in table:
            c.add_metric(list(mv), stats.tokens)
        yield c
        g = GaugeMetricFamily(
            "bigmodel_generation_sequences", "Sequences by state", labels=["model", "version", "state"]
        )
        for (m, v), stats in table:
            if stats.scheduler is not None and (m, v) in self.loaded:
                g.add_metric([m, v, "running"], stats.scheduler.running)
                g.add_metric([m, v, "waiting"], stats.scheduler.waiting)
        yield g

    def collect(self) -> Iterator[Any]:
        yield from self._generation_families()
        c = CounterMetricFamily(
            "bigmodel_inference_requests",
            "Inference requests by model, version and HTTP status",
            labels=["model", "version", "status"],
        )
        for labels, n in sorted(self.requests.items()):
            c.add_metric(list(labels), n)
        yield c
        for name, doc, table in (
            ("bigmodel_inference_request_duration_seconds", "Time from request to response", self.latency),
            ("bigmodel_inference_queue_duration_seconds", "Time a request waited for its batch", self.queue),
            ("bigmodel_inference_batch_size", "Rows per forward pass", self.batch),
        ):
            h = HistogramMetricFamily(name, doc, labels=["model", "version"])
            for mv, hist in sorted(table.items()):
                buckets, total = hist.family_args()
                h.add_metric(list(mv), buckets, total)
            yield h
        yield GaugeMetricFamily(
            "bigmodel_inference_in_flight", "Inference requests being served", self.in_flight
        )
        g = GaugeMetricFamily(
            "bigmodel_model_loaded", "Loaded model versions", labels=["model", "version", "runtime"]
        )
        for (m, v), rt in sorted(self.loaded.items()):
            g.add_metric([m, v, rt], 1)
        yield g

    def render(self) -> bytes:
        return generate_latest(self.registry)


class AccessLog:
    """One JSON object per request. Lines are written at the end of the event-loop iteration that
    answered them, together (one ``write`` for all the requests answered in that iteration), so a
    server killed with SIGKILL loses no line it answered before its last iteration; buffering them
    for 0.1 s lost ~300 of 11,381. ``None`` as the stream turns it off."""

    def __init__(self, stream: IO[bytes] | None):
        self.stream = stream
        self.buffer: list[bytes] = []
        self.lost = 0  # lines that could not be written (a full disk must not fail requests)

    @classmethod
    def open(cls, target: str | None) -> AccessLog:
        """``target``: a file (appended to; its folder is made), ``-`` (stderr) or ``off``. A folder,
        a path under a file or a file we may not write is a one-line error."""
        if not target or target == "off":
            return cls(None)
        if target == "-":
            return cls(sys.stderr.buffer)
        path = Path(target)
        if path.is_dir():
            raise BigModelError(f"access log {target} is a folder; give a file path, '-' or 'off'")
        make_dir(path.parent, "the access log's folder")
        try:
            return cls(open(path, "ab"))
        except OSError as err:
            raise BigModelError(f"cannot write the access log {target}: {err.strerror or err}") from None

    def write(self, record: dict[str, Any]) -> None:
        if self.stream is None:
            return
        record["ts"] = time.time()
        self.buffer.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        if len(self.buffer) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop (a record written outside the server's loop)
                self.flush()

    def flush(self) -> None:
        if self.stream is None or not self.buffer:
            return
        lines, self.buffer = self.buffer, []
        try:
            self.stream.write(b"".join(lines))
            self.stream.flush()
        except OSError:
            self.lost += len(lines)

    def start(self) -> None:
        """Nothing to start: kept so that the lifespan reads the same for every resource."""

    async def close(self) -> None:
        self.flush()
        if self.stream is not None and self.stream is not sys.stderr.buffer:
            self.stream.close()
