"""Every service metric, created against a registry that is passed in (never the global one),
so two apps in one test process do not collide.

One uvicorn worker per process (and per pod) is the design: every value lives in this process,
so /metrics is exact without prometheus_client's multiprocess mode, and the queue gauges can be
read at scrape time (multiprocess mode supports neither callback gauges nor per-app registries).
"""

from __future__ import annotations

import bisect
import gc
import itertools
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from housing_api import __version__
from housing_api.config import REQUEST_TIMEOUT_S_DEFAULT
from housing_api.exposition import VersionLabelled, version_label
from housing_api.redis_faults import REASONS as REDIS_ERROR_REASONS

# Cache hits answer in well under a millisecond; the default first bucket (10 ms) would hide them.
# The last bucket is the request deadline's default (REQUEST_TIMEOUT_S), so a p99 at it reads as such.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    REQUEST_TIMEOUT_S_DEFAULT,
)  # fmt: skip
# A one-row call on the compiled path takes microseconds; a 1024-row call on a throttled CPU, or
# the first call after start-up, can take most of a second.
INFERENCE_BUCKETS: tuple[float, ...] = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
ROWS_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
# A young-generation collection takes tens of microseconds; a full one over a large heap, tens to
# hundreds of milliseconds (one took 135 ms before gc.freeze(), see docs/reliability.md).
# |canary - stable| for one row, in the target's unit ($100,000s): from $100 (two versions that
# agree up to noise) to $500,000 (the whole range of the target, which is capped at 5).
DRIFT_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GC_PAUSE_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip

# -- label values --------------------------------------------------------------------------------
# Each is named once, here; every other module imports the constant (dashboards and alerts read the
# strings, so they change only together with grafana/ and prometheus/).
# Where a row's answer came from (cache_lookups{tier}, rows_served{source}). A tier with a stage of
# its own gives that stage its name too (queue_rows, worker_errors, stage_up{stage}).
HTTP: Final = "http"
"""Whole GET /predict responses (fastapi-cache2); a miss goes on to the row tiers."""
MEMORY: Final = "memory"
REDIS: Final = "redis"
MODEL: Final = "model"
REDIS_WRITE: Final = "redis_write"
"""The write-behind stage: rows the model computed, on their way to Redis."""
Source = Literal["memory", "redis", "model"]
"""The row tiers, in the order a row travels them (the chain itself is built in app.py)."""
StageName = Literal["redis", "model", "redis_write"]
# cache_lookups{outcome}. invalid: a value that did not decode to a finite float (or a valid
# response): used as a miss and overwritten.
HIT: Final = "hit"
MISS: Final = "miss"
ERROR: Final = "error"
INVALID: Final = "invalid"
# redis_errors{op}
PING: Final = "ping"
GET: Final = "get"
SET: Final = "set"
RedisOp = Literal["ping", "get", "set"]
# rejected_requests{reason}
INFLIGHT_FULL: Final = "inflight_full"
QUEUE_FULL: Final = "queue_full"
BODY_BUDGET: Final = "body_budget"
# drift_rows{outcome}: what became of a row sampled for the drift comparison (drift.py).
COMPARED: Final = "compared"
STABLE_MISSING: Final = "stable_missing"
"""No stable answer cached for the row."""
DROPPED: Final = "dropped"
"""Not compared: the drift queue was full, the read timed out, or Redis failed."""
# (INVALID, above: the stable value did not decode to a finite float; not observed.)
# request_timeouts{kind}
REQUEST: Final = "request"
BODY: Final = "body"

TIERS: dict[str, tuple[str, ...]] = {
    MEMORY: (HIT, MISS, ERROR),
    REDIS: (HIT, MISS, ERROR, INVALID),
    HTTP: (HIT, MISS, INVALID),
}
SOURCES = (HTTP, MEMORY, REDIS, MODEL)
STAGES: tuple[StageName, ...] = (REDIS, MODEL, REDIS_WRITE)
REDIS_OPS: tuple[RedisOp, ...] = (PING, GET, SET)
REJECT_REASONS = (INFLIGHT_FULL, QUEUE_FULL, BODY_BUDGET)
TIMEOUT_KINDS = (REQUEST, BODY)
DRIFT_OUTCOMES = (COMPARED, STABLE_MISSING, INVALID, DROPPED)


class GcPauses(Collector):
    """housing_api_gc_pause_seconds{generation}: how long each garbage collection stopped the process.

    The gc callback runs inside the collector, on whichever thread allocated: it only reads the
    clock and bumps plain integers (no lock, so a collection that starts while a scrape holds a
    metric's lock cannot deadlock on it), and the histogram is built when scraped. Collections never
    overlap (CPython runs one at a time), so the callback has no concurrent writer to race.
    """

    GENERATIONS = 3

    def __init__(self, buckets: tuple[float, ...] = GC_PAUSE_BUCKETS) -> None:
        self._bounds = buckets
        self._counts = [[0] * (len(buckets) + 1) for _ in range(self.GENERATIONS)]
        self._sums = [0.0] * self.GENERATIONS
        self._started = 0.0

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
            return
        generation, pause = info["generation"], now - self._started
        self._counts[generation][bisect.bisect_left(self._bounds, pause)] += 1
        self._sums[generation] += pause

    def install(self) -> None:
        """Start timing collections (the app's lifespan; gc.callbacks is process-wide)."""
        if self.callback not in gc.callbacks:
            gc.callbacks.append(self.callback)

    def remove(self) -> None:
        if self.callback in gc.callbacks:
            gc.callbacks.remove(self.callback)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "housing_api_gc_pause_seconds", "Duration of garbage collections, by generation.",
            labels=["generation"],
        )  # fmt: skip
        bounds = [repr(float(b)) for b in self._bounds] + ["+Inf"]
        for generation in range(self.GENERATIONS):
            cumulative = itertools.accumulate(list(self._counts[generation]))
            family.add_metric([str(generation)], list(zip(bounds, cumulative, strict=True)), self._sums[generation])
        yield family


class ServiceMetrics:
    """The housing_api_* metrics. Every label value is created up front, so each series exists
    (at 0) from the first scrape and rate() and ratios work before the first event."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.cache_lookups = Counter(
            "housing_api_cache_lookups", "Cache lookups by tier and outcome (rows; whole responses for http).",
            ["tier", "outcome"], registry=registry,
        )  # fmt: skip
        self.rows_served = Counter(
            "housing_api_rows_served", "Rows answered, by where the answer came from.",
            ["source"], registry=registry,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            "housing_api_model_inference_seconds", "Duration of one model call.",
            buckets=INFERENCE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.rows_per_call = Histogram(
            "housing_api_model_batch_rows", "Rows per model call (after micro-batching).",
            buckets=ROWS_BUCKETS, registry=registry,
        )  # fmt: skip
        self.redis_errors = Counter(
            "housing_api_redis_errors", "Failed Redis calls, by operation and reason (redis_faults.REASONS).",
            ["op", "reason"], registry=registry,
        )  # fmt: skip
        self.queue_rows = Gauge(
            "housing_api_queue_rows", "Rows waiting right now, by stage (read when scraped).",
            ["stage"], registry=registry,
        )  # fmt: skip
        self.memory_rows = Gauge(
            "housing_api_memory_cache_rows", "Rows held in the in-process tier now (read when scraped).",
            registry=registry,
        )  # fmt: skip
        self.inflight = Gauge(
            "housing_api_inflight_requests", "Prediction requests admitted and not yet answered.",
            registry=registry,
        )  # fmt: skip
        self.rejected = Counter(
            "housing_api_rejected_requests", "Requests refused with 429, by reason.", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.redis_up = Gauge(
            "housing_api_redis_up", "1 when the Redis tier is in use, 0 when degraded or disabled.",
            registry=registry,
        )  # fmt: skip
        self.model_info = Gauge(
            "housing_api_model_info", "Always 1; labels describe the loaded model.",
            ["version", "estimator", "fast_path"], registry=registry,
        )  # fmt: skip
        self.worker_errors = Counter(
            "housing_api_worker_errors", "Batches a background stage failed on (exception or overrun bound).",
            ["stage"], registry=registry,
        )  # fmt: skip
        self.stage_up = Gauge(
            "housing_api_stage_up", "1 while the stage's loop runs; 0 while it is down (the pod is unready).",
            ["stage"], registry=registry,
        )  # fmt: skip
        self.timeouts = Counter(
            "housing_api_request_timeouts", "Requests cut off by a deadline: request (503) or body (408).",
            ["kind"], registry=registry,
        )  # fmt: skip
        self.client_disconnects = Counter(
            "housing_api_client_disconnects", "Requests whose client hung up before its body arrived (4xx, not 5xx).",
            registry=registry,
        )  # fmt: skip
        self.write_dropped = Counter(
            "housing_api_redis_write_dropped", "Rows not written to Redis because the write-behind queue was full.",
            registry=registry,
        )  # fmt: skip
        self.inflight_rows = Gauge(
            "housing_api_inflight_rows", "Distinct rows being resolved now (the single-flight map; read when scraped).",
            registry=registry,
        )  # fmt: skip
        self.prediction_drift = Histogram(
            "housing_api_prediction_drift",
            "|this model's prediction - the stable version's cached one| for sampled rows, in $100,000s.",
            buckets=DRIFT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.drift_rows = Counter(
            "housing_api_drift_rows", "Rows sampled for the drift comparison, by outcome.", ["outcome"],
            registry=registry,
        )  # fmt: skip
        self.build_info = Info("housing_api_build", "Service build information.", registry=registry)
        self.build_info.info({"version": __version__})
        # process_* (CPU, memory, file descriptors), python_gc_* and python_info, on this registry
        # rather than the process-wide default one that the instrumentator never serves.
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.gc_pauses = GcPauses()
        registry.register(self.gc_pauses)
        self.exposed = VersionLabelled(registry)
        """What /metrics renders: this registry with the model_version label (exposition.py)."""
        self._create_series()

    def _create_series(self) -> None:
        for tier, outcomes in TIERS.items():
            for outcome in outcomes:
                self.cache_lookups.labels(tier, outcome)
        for source in SOURCES:
            self.rows_served.labels(source)
        for op in REDIS_OPS:
            for reason in REDIS_ERROR_REASONS:
                self.redis_errors.labels(op, reason)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for stage in STAGES:
            self.queue_rows.labels(stage)
            self.worker_errors.labels(stage)
            self.stage_up.labels(stage)
        for kind in TIMEOUT_KINDS:
            self.timeouts.labels(kind)
        for outcome in DRIFT_OUTCOMES:
            self.drift_rows.labels(outcome)

    def model_loaded(self, version: str, estimator: str, fast_path: bool) -> None:
        """housing_api_model_info, and the model_version label of every service sample from now on."""
        self.model_info.labels(version, estimator, str(fast_path).lower()).set(1)
        self.exposed.version = version_label(version)

    def watch_queues(self, depths: Mapping[str, Callable[[], float]]) -> None:
        """Read each queue's depth when scraped: a value set by a worker loop is stale as soon as
        rows arrive during an await, and stays stale while the worker is idle."""
        for stage, depth in depths.items():
            self.queue_rows.labels(stage).set_function(depth)

    def count_http_tier(self, cache_status: str | None) -> None:
        """Account for one GET /predict: a response-cache hit serves its row without the row tiers.
        (An invalid entry is counted where it is found, and then counts as a miss here.)"""
        if cache_status == "HIT":
            self.cache_lookups.labels(HTTP, HIT).inc()
            self.rows_served.labels(HTTP).inc()
        elif cache_status == "MISS":
            self.cache_lookups.labels(HTTP, MISS).inc()
