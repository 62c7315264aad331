"""Every service metric, created against a registry that is passed in (never the global one),
so two apps in one test process do not collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from housing_api import __version__

# Cache hits answer in well under a millisecond; the default first bucket (10 ms) would hide them.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
INFERENCE_BUCKETS: tuple[float, ...] = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
ROWS_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class ServiceMetrics:
    """The housing_api_* metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.cache_lookups = Counter(
            "housing_api_cache_lookups", "Row lookups by cache tier and outcome.",
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
            "housing_api_redis_errors", "Failed Redis calls, by operation.", ["op"], registry=registry
        )
        self.queue_rows = Gauge("housing_api_queue_rows", "Rows waiting, by stage.", ["stage"], registry=registry)
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
        self.build_info = Info("housing_api_build", "Service build information.", registry=registry)
        self.build_info.info({"version": __version__})
        for tier in ("memory", "redis"):
            for outcome in ("hit", "miss", "error"):
                self.cache_lookups.labels(tier, outcome)
        for source in ("memory", "redis", "model"):
            self.rows_served.labels(source)
        for stage in ("redis", "model"):
            self.queue_rows.labels(stage)
