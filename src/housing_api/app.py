"""create_app(settings) and the lifespan that owns the model, Redis, the resolver and metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi_cache import FastAPICache
from prometheus_client import CollectorRegistry

from housing_api import FEATURES, __version__
from housing_api.access import AccessLog
from housing_api.api import answer_head_like_get, build_router, install_error_handlers
from housing_api.batching import Chain, Resolver
from housing_api.body import BodyBudget, BodyReader
from housing_api.cache import VALUE_ENCODING, MemoryTier, RedisTier
from housing_api.config import Settings, redact_url
from housing_api.deps import Services
from housing_api.docs_ui import mount_docs
from housing_api.drift import DriftCheck, DriftConfig
from housing_api.exposition import serve_metrics
from housing_api.http_cache import AppScopedBackend, HttpCacheBackend, key_prefix
from housing_api.http_metrics import METRICS_PATH, instrument, track_requests
from housing_api.keys import key_namespace
from housing_api.metrics import ServiceMetrics
from housing_api.model import load_model
from housing_api.predict_route import PredictRoute
from housing_api.redis_cluster import ClusterTier
from housing_api.registry import ModelSource, resolve_source
from housing_api.schemas import SAMPLE_BATCH, BatchValidator
from housing_api.service import PredictionService
from housing_api.tiers import ModelCall, RedisLookup, RedisWrites, Tier

if TYPE_CHECKING:  # imported only when tracing is on (_tracing)
    from housing_api.tracing import Tracing

log = logging.getLogger(__name__)
RESOLVER_STOP_S = 5.0
"""Bound of flushing queued rows and Redis writes at shutdown (part of SHUTDOWN_TIMEOUT_S)."""


def _sample_response() -> dict[str, Any]:
    return {
        # What the committed model answers for SAMPLE_BATCH (tested in test_readme).
        "query_key": "d55e3f4c8b28f2976949be05f14b42bb",
        "inputs": [{f: float(r[f]) for f in FEATURES} for r in SAMPLE_BATCH],
        "prediction": [4.167084067827071, 2.1844168463657687, 2.129832158899697, 2.12975721610681],
        "model_version": "a0dd6c52d36400665decefb220c8d26539e3193d3eaa2680321db514021776bb",
    }


def create_app(settings: Settings | None = None, source: ModelSource | None = None) -> FastAPI:
    """Build the app; nothing is loaded or connected until the lifespan starts. `source` is the model
    the CLI already resolved (and fetched); without it the lifespan resolves the settings' own."""
    settings = settings or Settings()
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    validator = BatchValidator(settings.max_batch_rows)
    budget = BodyBudget(settings.max_inflight_requests * settings.max_body_bytes)
    services = Services(BodyReader(settings.max_body_bytes, settings.body_timeout_s, budget, metrics))
    access = AccessLog(settings.access_log_sample, settings.access_log_slow_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracing = access.tracing = _tracing(settings)
        service, redis = await _start(settings, metrics, validator, source, tracing)
        services.service = service
        app.state.service = service  # for tests, as below
        services.http_cache = http_cache = HttpCacheBackend(
            min(settings.memory_cache_rows, 10_000), redis, settings.http_cache_max_age, metrics,
            key_prefix(settings.cache_prefix, service.model.version),
        )  # fmt: skip
        # Process-wide and first-call-wins (see http_cache.py): nothing app-specific is set here.
        FastAPICache.init(AppScopedBackend(), prefix="housing-api-http")
        log.info(
            "ready: model %s (fast path: %s), cache %s",
            service.model.version[:16],
            service.model.fast_path,
            "redis + memory" if redis else "memory only",
        )
        # Everything allocated so far lives as long as the process; moving it out of the collector's
        # reach keeps full collections under load short (one took 135 ms, a p99 spike, without this).
        gc.collect()
        gc.freeze()
        metrics.gc_pauses.install()
        try:
            yield
        finally:
            metrics.gc_pauses.remove()
            await service.resolver.stop(RESOLVER_STOP_S)
            await http_cache.drain(1.0)
            if redis is not None:
                await redis.close()
            if tracing is not None:
                access.tracing = None
                await asyncio.to_thread(tracing.shutdown)  # exports what is queued: network I/O

    app = FastAPI(
        title="housing-api",
        version=__version__,
        summary="California house-price predictions for batches of inputs, with a per-row cache.",
        lifespan=lifespan,
        docs_url=None,  # mount_docs serves /docs from local files, not a CDN
        redoc_url=None,  # ReDoc's bundle loads its logo from a CDN (docs_ui.py)
        # /predict/ is a 404, not a redirect: Starlette's redirect names the Host the client sent.
        redirect_slashes=False,
    )
    # For tests and a debugging session only: nothing in src/ reads app.state (the routes read `services`).
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.services = services
    app.include_router(build_router(services, validator.openapi_schema(), _sample_response()))
    install_error_handlers(app)
    # The app's own layers, innermost first: the instrumentator's metrics, the hot path of POST
    # /predict in front of them (it records its own), then every request's id, access line and span.
    http_metrics = instrument(app, registry)
    app.add_middleware(PredictRoute, services=services, metrics=http_metrics)
    track_requests(app, registry, access)
    serve_metrics(app, METRICS_PATH, metrics.exposed)
    mount_docs(app)
    answer_head_like_get(app.router)  # /metrics and /docs (build_router's routes have theirs)
    return app


def model_source(settings: Settings) -> ModelSource:
    """MODEL_URI (a registry version is fetched into MODEL_STORE first), else MODEL_PATH."""
    return resolve_source(settings.model_uri, settings.model_path, settings.model_store, settings.mlflow_tracking_uri)


def _tracing(settings: Settings) -> Tracing | None:
    """The tracer when OTEL_EXPORTER_OTLP_ENDPOINT is set; the OpenTelemetry SDK is not even imported otherwise."""
    if not settings.otel_exporter_otlp_endpoint:
        return None
    from housing_api.tracing import Tracing

    log.info("tracing: spans to %s/v1/traces (OTLP/HTTP)", redact_url(settings.otel_exporter_otlp_endpoint))
    return Tracing(settings.otel_exporter_otlp_endpoint)


async def _start(
    settings: Settings,
    metrics: ServiceMetrics,
    validator: BatchValidator,
    source: ModelSource | None,
    tracing: Tracing | None = None,
) -> tuple[PredictionService, RedisTier | None]:
    if source is None:
        # Fetching from a registry is network I/O: keep it off the event loop.
        source = await asyncio.to_thread(model_source, settings)
    model = load_model(source.path, source.registry)
    # The estimator's name from model.json: model.estimator would unpickle it just for a label.
    metrics.model_loaded(model.version, model.info.estimator, model.fast_path)
    redis = _redis_tier(settings, metrics)
    if redis is not None and not await redis.ping():
        log.warning(
            "Redis at %s is not reachable at startup; starting degraded (model + in-process tier)",
            redact_url(settings.redis_url or ""),
        )
    namespace = key_namespace(settings.cache_prefix, model.version, VALUE_ENCODING)
    # The resolution chain, in the order a row travels it: the in-process tier, then Redis, then the
    # model. Every answer is kept in memory; what the model computes is written behind to Redis.
    tiers: tuple[Tier, ...] = (
        RedisLookup(redis, namespace, metrics), ModelCall(model, metrics, settings.inline_predict_rows),
    )  # fmt: skip
    write_behind = RedisWrites(redis, namespace, metrics)
    if tracing is not None:  # the same chain, each tier's batches recorded as spans
        from housing_api.tracing import TracedTier, TracedWrites

        tiers = tuple(TracedTier(tier, tracing) for tier in tiers)
        write_behind = TracedWrites(redis, namespace, metrics, tracing)
    drift, drift_check = _drift(settings, model.version, redis, metrics)
    chain = Chain(MemoryTier(settings.memory_cache_rows), tiers, write_behind, drift_check)
    resolver = Resolver(
        chain, metrics, batch_max_rows=settings.batch_max_rows, batch_max_wait_s=settings.batch_max_wait_ms / 1000,
        max_queued_rows=settings.max_queued_rows, request_timeout_s=settings.request_timeout_s,
        micro_batching=settings.micro_batching, stage_down_livez_s=settings.stage_down_livez_s,
        tracing=tracing,
    )  # fmt: skip
    resolver.start()
    service = PredictionService(model, resolver, validator, metrics, settings.max_inflight_requests, drift)
    return service, redis


def _drift(
    settings: Settings, version: str, redis: RedisTier | None, metrics: ServiceMetrics
) -> tuple[DriftConfig, DriftCheck | None]:
    """The drift configuration, and the check when STABLE_MODEL_VERSION names another version."""
    config = DriftConfig.of(settings.stable_model_version, settings.drift_sample, version, redis is not None)
    if redis is None or not config.active:
        return config, None
    log.info("prediction drift: %g of computed rows compared with model %s", config.sample, version[:16])
    namespace = key_namespace(settings.cache_prefix, config.stable_model_version, VALUE_ENCODING)
    return config, DriftCheck(redis, namespace, config.sample, metrics)


def _redis_tier(settings: Settings, metrics: ServiceMetrics) -> RedisTier | None:
    """The shared tier for REDIS_MODE: one server or the master the sentinels name, or a cluster."""
    if not settings.redis_url:
        return None
    bounds = (settings.redis_timeout_ms / 1000, settings.cache_ttl_seconds, settings.redis_retry_interval_s, metrics)
    if settings.redis_mode == "cluster":
        tls = settings.redis_url.startswith("rediss://")
        return ClusterTier(settings.redis_nodes(), *bounds, connection=settings.redis_connection(), tls=tls)
    return RedisTier(
        settings.redis_url, *bounds, connection=settings.redis_connection(),
        sentinel_master=settings.redis_sentinel_master,
    )  # fmt: skip
