"""Traces end to end: a real `housing-api serve` exports OTLP/HTTP protobuf to a receiver in this test
process, which decodes it with opentelemetry-proto; the ids of an incoming request (what Istio's sidecar
sends) are the ones in its spans, in its access log line and in its response."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RedisServer, make_settings, running_app, wait_until
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from housing_api import tracing
from housing_api.app import create_app
from housing_api_testing.harness import ServiceProcess

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


class OtlpReceiver:
    """An OTLP/HTTP trace receiver: every span POSTed to /v1/traces, decoded from protobuf."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                receiver.paths.append(f"{self.path} {self.headers['Content-Type']}")
                receiver.spans += [s for r in request.resource_spans for ss in r.scope_spans for s in ss.spans]
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def of_trace(self, trace_id: str) -> dict[str, Span]:
        return {s.name: s for s in list(self.spans) if s.trace_id.hex() == trace_id}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def attributes(span: Span) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        values[kv.key] = getattr(kv.value, kind) if kind else None
    return values


def fresh_rows(n: int) -> list[dict[str, float]]:
    """Rows no cache has seen (the clock in MedInc): they travel memory, Redis and the model."""
    base = time.time_ns() % 10**9 / 10**9
    row = {"HouseAge": 20.0, "AveRooms": 5.0, "AveBedrms": 1.0, "Population": 1000.0, "AveOccup": 3.0,
           "Latitude": 34.0, "Longitude": -118.0}  # fmt: skip
    return [{"MedInc": 3.0 + base + i / 1000, **row} for i in range(n)]


@pytest.mark.integration
def test_a_traced_request_carries_the_callers_ids_into_spans_logs_and_response(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path).start()
    log = tmp_path / "serve.log"
    env = {"REDIS_URL": redis.url, "REDIS_TIMEOUT_MS": "500", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
           "OTEL_BSP_SCHEDULE_DELAY": "50", "LOG_FORMAT": "json", "ACCESS_LOG_SAMPLE": "1"}  # fmt: skip
    service = ServiceProcess(env, log).start()
    try:
        rows = fresh_rows(3)
        headers = {"traceparent": TRACEPARENT, "x-request-id": "req-e2e-1"}
        response = httpx.post(service.url + "/predict", json=rows, headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        assert response.headers["x-request-id"] == "req-e2e-1"
        expected = {"POST /predict", "memory lookup", "redis lookup", "model call", "redis write"}
        assert wait_until(lambda: expected <= receiver.of_trace(TRACE_ID).keys(), 15), receiver.of_trace(TRACE_ID)
        spans = receiver.of_trace(TRACE_ID)
        # Without either: a request id is made up and sent back, and a trace started here.
        plain = httpx.get(service.url + "/livez", timeout=10)
        assert len(plain.headers["x-request-id"]) == 32
        assert wait_until(lambda: any(s.name == "GET /livez" for s in receiver.spans), 15)
    finally:
        assert service.stop() == 0
        redis.stop()

    request = spans["POST /predict"]
    assert request.parent_span_id.hex() == PARENT_ID
    assert request.kind == Span.SPAN_KIND_SERVER
    assert attributes(request)["http.request.header.x-request-id"] == "req-e2e-1"
    assert attributes(request)["housing_api.rows"] == 3
    assert attributes(request)["http.response.status_code"] == 200
    for name in ("memory lookup", "redis lookup", "model call", "redis write"):
        assert attributes(spans[name])["housing_api.rows"] == 3, name
    assert attributes(spans["memory lookup"])["housing_api.rows_answered"] == 0
    assert attributes(spans["redis lookup"])["housing_api.rows_answered"] == 0
    assert attributes(spans["model call"])["housing_api.rows_answered"] == 3
    assert [spans[n].kind for n in ("redis lookup", "model call", "redis write")] == [
        Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_INTERNAL, Span.SPAN_KIND_CLIENT]  # fmt: skip
    assert attributes(spans["redis lookup"])["db.system.name"] == "redis"
    assert {s.parent_span_id for s in spans.values() if s is not request} == {request.span_id}
    assert all(p.endswith(" application/x-protobuf") and p.startswith("/v1/traces ") for p in receiver.paths)

    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line is JSON (uvicorn's too)
    (line,) = [x for x in lines if x["logger"] == "housing_api.access" and x.get("request_id") == "req-e2e-1"]
    assert (line["trace_id"], line["span_id"]) == (TRACE_ID, request.span_id.hex())
    assert line["http"] == {**line["http"], "method": "POST", "route": "/predict", "status": 200}
    (livez,) = [x for x in lines if x["logger"] == "housing_api.access" and x["http"]["path"] == "/livez"]
    assert livez["request_id"] == plain.headers["x-request-id"]
    assert any(s.trace_id.hex() == livez["trace_id"] for s in receiver.spans)  # generated, and exported


# -- in-process: what a micro-batch shared by several requests records -------------------------------
def traced(exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, rows_per_request: int,
           traceparents: list[str]) -> list[ReadableSpan]:  # fmt: skip
    """POST each traceparent's request at once, with BATCH_MAX_WAIT_MS so that they share a micro-batch."""
    monkeypatch.setattr(tracing, "OtlpHttpExporter", lambda endpoint: exporter)
    settings = make_settings(otel_exporter_otlp_endpoint="http://collector.invalid:4318", batch_max_wait_ms=100)
    app = create_app(settings)

    async def scenario() -> None:
        async with running_app(app) as client:
            sent = [client.post("/predict", json=fresh_rows(rows_per_request), headers={"traceparent": t})
                    for t in traceparents]  # fmt: skip
            assert [r.status_code for r in await asyncio.gather(*sent)] == [200] * len(traceparents)
            app.state.service.resolver.tracing.provider.force_flush()

    asyncio.run(scenario())
    return list(exporter.get_finished_spans())


def test_a_shared_micro_batch_is_the_child_of_one_request_and_linked_to_the_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = "1" * 32, "2" * 32
    spans = traced(InMemorySpanExporter(), monkeypatch, 2, [f"00-{first}-{'a' * 16}-01", f"00-{second}-{'b' * 16}-01"])
    requests = {s.context.trace_id: s for s in spans if s.name == "POST /predict"}
    (model,) = [s for s in spans if s.name == "model call"]  # one call for both requests' rows
    assert model.attributes == {"housing_api.rows": 4, "housing_api.requests": 2, "housing_api.rows_answered": 4}
    parent = requests[model.context.trace_id]
    assert model.parent is not None and model.parent.span_id == parent.context.span_id
    (other,) = [r for r in requests.values() if r is not parent]
    assert [link.context.span_id for link in model.links] == [other.context.span_id]
    assert {s.name for s in spans if s.name == "memory lookup"} == {"memory lookup"}
    assert len([s for s in spans if s.name == "memory lookup"]) == 2  # one per request


def test_an_unsampled_request_records_no_span(monkeypatch: pytest.MonkeyPatch) -> None:
    # Istio's sidecar samples 1% by default: the others arrive with the sampled flag off.
    spans = traced(InMemorySpanExporter(), monkeypatch, 2, [f"00-{'3' * 32}-{'c' * 16}-00"])
    assert spans == []


@pytest.mark.integration
def test_an_unreachable_collector_fails_the_export_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    from housing_api_testing.harness import free_port

    exporter = tracing.OtlpHttpExporter(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with caplog.at_level("WARNING", logger="housing_api.tracing"):
        results = [exporter.export([]) for _ in range(3)]
    assert results == [tracing.SpanExportResult.FAILURE] * 3
    assert len([r for r in caplog.records if "could not export" in r.getMessage()]) == 1


@pytest.mark.integration
def test_a_collector_that_never_answers_holds_neither_requests_nor_the_shutdown(tmp_path: Path) -> None:
    import socket

    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}",
               "OTEL_BSP_SCHEDULE_DELAY": "10"}  # fmt: skip
        service = ServiceProcess(env, tmp_path / "serve.log").start()
        try:
            traced = {"traceparent": TRACEPARENT}
            for _ in range(20):
                assert httpx.post(service.url + "/predict", json=fresh_rows(2), headers=traced).status_code == 200
            time.sleep(0.5)  # an export is now stuck waiting for the collector
        finally:
            started = time.monotonic()
            code = service.stop(timeout_s=20)
            took = time.monotonic() - started
    assert code == 0, service.output()
    assert took < 5, took  # drain 0.5 s + traces 1 s, not the SDK's 30 s nor the export's 10 s
