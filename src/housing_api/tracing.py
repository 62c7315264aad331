"""OpenTelemetry traces, when OTEL_EXPORTER_OTLP_ENDPOINT is set; nothing here runs otherwise (app.py
imports this module only then).

A request is one SERVER span, the child of the traceparent it came with (what Istio's sidecar sends),
and the in-process lookup its child span. The other tiers run once per micro-batch, for rows of many
requests at once (batching.py): each batch is one span, the child of the first sampled request it
serves and linked to every other one, with the rows it was given and the rows it answered. So each
request's trace holds the batches its rows travelled, as a child or as a link, and a batch is never
recorded twice. A batch that serves no sampled request records nothing.

Spans go out in the SDK's batches, from its own thread, as OTLP/HTTP protobuf (`OtlpHttpExporter`: one
POST with the SDK's encoder, rather than the SDK's exporter and the requests stack it brings).
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from housing_api import __version__
from housing_api.cache import RedisTier
from housing_api.inflight import Pending
from housing_api.metrics import MEMORY, MODEL, REDIS, REDIS_WRITE, ServiceMetrics, Source
from housing_api.tiers import RedisWrites, Tier

log = logging.getLogger(__name__)
EXPORT_TIMEOUT_S = 10.0
EXPORT_LOG_EVERY_S = 60.0
STOP_S = 1.0
"""Bound of exporting the spans still queued at shutdown (within the 2 s SHUTDOWN_TIMEOUT_S leaves
beyond uvicorn's drain and the resolver's stop, cli.graceful_timeout); later ones are dropped."""
ROWS = "housing_api.rows"
"""Rows a span was given (the request: rows in its batch; a tier: rows in its micro-batch)."""
ANSWERED = "housing_api.rows_answered"
REQUESTS = "housing_api.requests"
SPAN_NAMES: dict[str, str] = {MEMORY: "memory lookup", REDIS: "redis lookup", MODEL: "model call",
                              REDIS_WRITE: "redis write"}  # fmt: skip


class OtlpHttpExporter(SpanExporter):
    """OTLP/HTTP with protobuf bodies to `<endpoint>/v1/traces`, as the spec derives it from
    OTEL_EXPORTER_OTLP_ENDPOINT. A failure drops the batch (counted by the SDK's processor as such)
    and is logged at most once a minute: tracing must never take the service down with it."""

    def __init__(self, endpoint: str, timeout_s: float = EXPORT_TIMEOUT_S) -> None:
        parts = urlsplit(endpoint.rstrip("/") + "/v1/traces")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL, not {endpoint!r}")
        self.parts = parts
        self.timeout_s = timeout_s
        self._logged_at = -EXPORT_LOG_EVERY_S

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        body = encode_spans(spans).SerializeToString()
        try:
            status = self._post(body)
        except OSError as exc:  # refused, reset, timed out, TLS
            self._failed(f"{type(exc).__name__}: {exc}", len(spans))
            return SpanExportResult.FAILURE
        if status >= 300:
            self._failed(f"HTTP {status}", len(spans))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _post(self, body: bytes) -> int:
        p = self.parts
        kind = http.client.HTTPSConnection if p.scheme == "https" else http.client.HTTPConnection
        connection = kind(p.netloc, timeout=self.timeout_s)
        try:
            path = p.path + (f"?{p.query}" if p.query else "")
            connection.request("POST", path, body, {"Content-Type": "application/x-protobuf"})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def _failed(self, why: str, n: int) -> None:
        now = time.monotonic()
        if now - self._logged_at >= EXPORT_LOG_EVERY_S:
            self._logged_at = now
            log.warning("could not export %d spans to %s://%s: %s (dropped; at most one such line a minute)",
                        n, self.parts.scheme, self.parts.netloc, why)  # fmt: skip

    def shutdown(self) -> None:
        """Nothing held between exports."""


class Tracing:
    """The tracer provider, owned by the app's lifespan, and the spans of the request path."""

    def __init__(self, endpoint: str) -> None:
        # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and OTEL_TRACES_SAMPLER(_ARG) are read by the SDK
        # here, as everywhere else; the default sampler follows the caller's sampled flag (Istio's).
        resource = Resource.create({SERVICE_NAME: "housing-api", SERVICE_VERSION: __version__})
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(OtlpHttpExporter(endpoint)))
        self.tracer = self.provider.get_tracer("housing_api", __version__)
        self._propagator = TraceContextTextMapPropagator()

    def shutdown(self) -> None:
        """Export what is queued, for STOP_S at most: the SDK's own shutdown may wait 30 s for a collector
        that does not answer, so it runs in a daemon thread that the process does not wait for."""
        stopping = threading.Thread(target=self.provider.shutdown, name="traces-shutdown", daemon=True)
        stopping.start()
        stopping.join(STOP_S)

    # -- the request --------------------------------------------------------------------------------
    def start_request(self, method: str, route: str, path: str, traceparent: bytes | None) -> tuple[Span, object]:
        """The request's span, made current; `end_request` ends it."""
        parent = self._propagator.extract({"traceparent": traceparent.decode("latin-1")}) if traceparent else None
        span = self.tracer.start_span(
            f"{method} {route}" if route != "none" else method, context=parent, kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route, "url.path": path},
        )  # fmt: skip
        return span, context.attach(trace.set_span_in_context(span))

    @staticmethod
    def end_request(span: Span, token: object, status: int, request_id: bytes) -> None:
        if span.is_recording():
            span.set_attribute("http.response.status_code", status)
            span.set_attribute("http.request.header.x-request-id", request_id.decode("latin-1"))
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        span.end()
        context.detach(token)  # type: ignore[arg-type]

    def memory_lookup(self, lookup: Callable[[list[Any], list[float]], list[int]], rows: list[Any],
                      values: list[float]) -> list[int]:  # fmt: skip
        """The in-process lookup as a child span of the request's, with its row counts (also on the request)."""
        request = trace.get_current_span()
        if not request.is_recording():
            return lookup(rows, values)
        request.set_attribute(ROWS, len(rows))
        with self.tracer.start_as_current_span(SPAN_NAMES[MEMORY], attributes={ROWS: len(rows)}) as span:
            missing = lookup(rows, values)
            span.set_attribute(ANSWERED, len(rows) - len(missing))
        return missing

    @staticmethod
    def request_context() -> SpanContext | None:
        """The current request span's context if it is sampled (kept on its ticket), else None."""
        span_context = trace.get_current_span().get_span_context()
        return span_context if span_context.trace_flags.sampled else None

    # -- the tiers ----------------------------------------------------------------------------------
    def batch_span(self, name: str, contexts: list[SpanContext], rows: int) -> Any:
        """A micro-batch's span: the child of the first request, linked to the others. A Redis round
        trip is a CLIENT span of db.system.name redis, as tracing backends draw a dependency."""
        parent = trace.set_span_in_context(trace.NonRecordingSpan(contexts[0]), Context())
        attributes: dict[str, str | int] = {ROWS: rows, REQUESTS: len(contexts)}
        kind = SpanKind.INTERNAL
        if name in (REDIS, REDIS_WRITE):
            kind, attributes["db.system.name"] = SpanKind.CLIENT, "redis"
        return self.tracer.start_as_current_span(
            SPAN_NAMES[name], context=parent, kind=kind, links=[Link(c) for c in contexts[1:]], attributes=attributes
        )


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, for log lines (logs.TraceIds)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


def requests_served(batch: Sequence[Pending]) -> list[SpanContext]:
    """The sampled request spans waiting for any row of the batch, each once, in order."""
    found: dict[int, SpanContext] = {}
    for pending in batch:
        for ticket, _ in pending.waiters:
            if ticket.span is not None:
                found.setdefault(ticket.span.span_id, ticket.span)
    return list(found.values())


class TracedTier:
    """A tier whose batches are spans (a Tier itself: the chain in app.py holds it in the tier's place)."""

    def __init__(self, tier: Tier, tracing: Tracing) -> None:
        self.tier = tier
        self.tracing = tracing
        self.name: Source = tier.name

    def usable(self) -> bool:
        return self.tier.usable()

    async def answer(self, batch: list[Pending]) -> Sequence[float | None]:
        contexts = requests_served(batch)
        if not contexts:
            return await self.tier.answer(batch)
        with self.tracing.batch_span(self.name, contexts, len(batch)) as span:
            found = await self.tier.answer(batch)
            span.set_attribute(ANSWERED, len(found) - list(found).count(None))
            return found

    def failed(self, exc: BaseException) -> bool:
        return self.tier.failed(exc)

    def close(self) -> None:
        self.tier.close()


class TracedWrites(RedisWrites):
    """The write-behind, each write batch a span. Its items are (key, value) pairs queued apart from
    the rows they came from, so each pair carries the requests it was computed for (`_Item`)."""

    def __init__(self, redis: RedisTier | None, namespace: str, metrics: ServiceMetrics, tracing: Tracing) -> None:
        super().__init__(redis, namespace, metrics)
        self.tracing = tracing

    def items(self, answered: list[tuple[Pending, float]]) -> list[tuple[str, bytes]]:
        items = super().items(answered)
        return [_Item(item, requests_served([pending])) for item, (pending, _) in zip(items, answered, strict=True)]

    async def write(self, items: list[tuple[str, bytes]]) -> None:
        found: dict[int, SpanContext] = {}
        for item in items:
            for c in getattr(item, "requests", ()):
                found.setdefault(c.span_id, c)
        if not found:
            await super().write(items)
            return
        with self.tracing.batch_span(REDIS_WRITE, list(found.values()), len(items)):
            await super().write(items)


class _Item(tuple[str, bytes]):
    """A (key, value) pair to write, with the sampled requests it was computed for."""

    requests: list[SpanContext]

    def __new__(cls, item: tuple[str, bytes], requests: list[SpanContext]) -> _Item:
        self = super().__new__(cls, item)
        self.requests = requests
        return self
