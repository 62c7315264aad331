"""tracing.py in this process: the request's span (its parent from traceparent, its attributes and
status), log ids, the tiers passed through unchanged, and an exporter failure that is dropped, never
raised. Spans go to an in-memory exporter here; to a real OTLP collector in tests/integration/test_tracing_live.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from housing_api import tracing
from housing_api.inflight import Pending
from housing_api.tracing import OtlpHttpExporter, TracedTier, Tracing, current_ids

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exported = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "OtlpHttpExporter", lambda endpoint: exported)
    t = Tracing("http://collector:4318")
    yield t, exported
    t.shutdown()


def test_a_request_span_continues_the_callers_trace_and_records_the_answer(
    traced: tuple[Tracing, InMemorySpanExporter],
) -> None:
    t, exported = traced
    span, token = t.start_request("POST", "/predict", "/predict", TRACEPARENT)
    ids = current_ids()
    Tracing.end_request(span, token, 503, b"req-1")
    assert current_ids() is None  # detached with the request
    t.provider.force_flush()
    (done,) = exported.get_finished_spans()
    assert ids == (TRACE_ID, f"{done.context.span_id:016x}")
    assert (done.name, done.kind, f"{done.context.trace_id:032x}") == ("POST /predict", SpanKind.SERVER, TRACE_ID)
    assert done.attributes is not None and done.attributes["http.response.status_code"] == 503
    assert done.attributes["http.request.header.x-request-id"] == "req-1"
    assert done.status.status_code == StatusCode.ERROR


def test_a_path_no_route_serves_is_named_by_its_method_only(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    t, exported = traced
    span, token = t.start_request("GET", "none", "/wp-admin", None)
    Tracing.end_request(span, token, 404, b"req-2")
    t.provider.force_flush()
    (done,) = exported.get_finished_spans()
    assert done.name == "GET" and done.status.status_code == StatusCode.UNSET and done.parent is None


class Tier:
    name = "model"

    def __init__(self) -> None:
        self.closed = False

    def usable(self) -> bool:
        return False

    async def answer(self, batch: list[Pending]) -> Sequence[float | None]:
        return [1.0] * len(batch)

    def failed(self, exc: BaseException) -> bool:
        return isinstance(exc, TimeoutError)

    def close(self) -> None:
        self.closed = True


def test_a_traced_tier_answers_as_its_tier_and_records_nothing_for_unsampled_rows(
    traced: tuple[Tracing, InMemorySpanExporter],
) -> None:
    t, exported = traced
    tier = Tier()
    wrapped = TracedTier(tier, t)  # type: ignore[arg-type]
    assert asyncio.run(wrapped.answer([Pending(b"r")])) == [1.0]
    assert (wrapped.name, wrapped.usable(), wrapped.failed(TimeoutError()), wrapped.failed(ValueError())) == (
        "model", False, True, False,
    )  # fmt: skip
    wrapped.close()
    t.provider.force_flush()
    assert tier.closed and exported.get_finished_spans() == ()


@pytest.mark.parametrize("endpoint", ["otel:4318", "grpc://otel:4317", "http://"])
def test_an_endpoint_that_is_not_an_http_url_is_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="must be an http:// or https:// URL"):
        OtlpHttpExporter(endpoint)


def test_spans_go_to_the_specs_traces_path() -> None:
    assert OtlpHttpExporter("https://otel.example:4318/").parts.path == "/v1/traces"


def test_a_failed_export_drops_the_batch_and_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = OtlpHttpExporter("http://otel:4318")
    answers: list[int | OSError] = [ConnectionRefusedError("refused"), 404, 200]

    def post(body: bytes) -> int:
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    monkeypatch.setattr(exporter, "_post", post)
    with caplog.at_level(logging.WARNING, "housing_api.tracing"):
        results = [exporter.export([]) for _ in range(3)]
    assert results == [SpanExportResult.FAILURE, SpanExportResult.FAILURE, SpanExportResult.SUCCESS]
    assert len(caplog.messages) == 1 and "ConnectionRefusedError: refused" in caplog.messages[0]
