"""http_metrics.py: the http_* series each request is recorded in and their labels (route template,
method, status class), requests in progress, and the direct recording of the hot path. In-process."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import httpx
import pytest
from conftest import app_client, run
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from housing_api.http_metrics import SLO_ROUTES, STATUS_CLASSES, DirectSeries, HttpMetrics, InProgress
from housing_api.schemas import SAMPLE_BATCH


def test_the_slo_series_exist_at_zero_before_the_first_request() -> None:
    registry = CollectorRegistry()
    HttpMetrics(registry)
    for handler, method in SLO_ROUTES:
        for status in STATUS_CLASSES:
            labels = {"handler": handler, "method": method, "status": status}
            assert registry.get_sample_value("http_requests_total", labels) == 0
            assert registry.get_sample_value("http_request_duration_seconds_count", labels) == 0


def test_a_request_is_recorded_by_route_template_method_and_status_class_with_its_sizes() -> None:
    with app_client() as c:
        c.get("/health")
        c.get("/health")
        c.get("/nowhere/at/all")
        c.get("/metrics")
        value = c.app.state.metrics.registry.get_sample_value  # type: ignore[attr-defined]
        health = {"handler": "/health", "method": "GET", "status": "2xx"}
        assert value("http_requests_total", health) == 2
        assert value("http_request_duration_seconds_count", health) == 2
        assert value("http_response_size_bytes_sum", {"handler": "/health"}) == 2 * len(c.get("/health").content)
        # An untemplated path is one series, "none", not one per path a scanner tries.
        assert value("http_requests_total", {"handler": "none", "method": "GET", "status": "4xx"}) == 1
        assert value("http_requests_total", {"handler": "/metrics", "method": "GET", "status": "2xx"}) is None


def test_latency_is_recorded_with_the_status_class() -> None:
    # The SLO reads the 2xx answers only: a fast 422 or 429 must not pull the p99 down.
    with app_client() as c:
        c.post("/predict", json=SAMPLE_BATCH)
        c.post("/predict", json=[{**SAMPLE_BATCH[0], "MedInc": -1}])
        value = c.app.state.metrics.registry.get_sample_value  # type: ignore[attr-defined]
    predict = {"handler": "/predict", "method": "POST"}
    assert value("http_request_duration_seconds_count", {**predict, "status": "2xx"}) == 1
    assert value("http_request_duration_seconds_count", {**predict, "status": "4xx"}) == 1
    assert value("http_request_duration_highr_seconds_count") == 2


def test_route_templates_are_remembered_per_path_and_method() -> None:
    with app_client() as c:
        for i in range(3):
            c.get(f"/scan-{i}")
        layer: Any = c.app.middleware_stack  # type: ignore[attr-defined]
        while not hasattr(layer, "_handlers"):
            layer = layer.app
        assert len(layer._handlers) == 3  # (root path, path, method) each: resolved once


def _blocking_app(release: asyncio.Event, gauge: Gauge) -> Starlette:
    async def slow(request: Request) -> PlainTextResponse:
        await release.wait()
        return PlainTextResponse("done")

    async def metrics(request: Request) -> PlainTextResponse:
        return PlainTextResponse("")

    routes = [Route("/items/{item}", slow), Route("/metrics", metrics)]
    return Starlette(routes=routes, middleware=[Middleware(InProgress, gauge=gauge)])


def _in_progress(app: Starlette) -> InProgress:
    layer: Any = app.middleware_stack
    while not isinstance(layer, InProgress):
        layer = layer.app
    return layer


ITEMS = {"handler": "/items/{item}", "method": "GET"}


def test_requests_in_progress_are_counted_by_route_template_and_method() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("http_requests_inprogress", "", ["handler", "method"], registry=registry)

    async def scenario() -> tuple[float | None, float | None]:
        release = asyncio.Event()
        transport = httpx.ASGITransport(app=_blocking_app(release, gauge))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            pending = [asyncio.create_task(c.get(f"/items/{i}")) for i in range(3)]
            await asyncio.sleep(0.05)
            during = registry.get_sample_value("http_requests_inprogress", ITEMS)
            release.set()
            await asyncio.gather(*pending)
            await c.get("/metrics")
            await c.get("/nowhere")
        after = registry.get_sample_value("http_requests_inprogress", ITEMS)
        return during, after

    assert run(scenario()) == (3, 0)
    handlers = {s.labels["handler"] for f in registry.collect() for s in f.samples}
    assert handlers == {"/items/{item}", "none"}  # /metrics itself is not counted


@pytest.mark.slow
def test_the_in_progress_memo_is_bounded() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("http_requests_inprogress", "", ["handler", "method"], registry=registry)
    release = asyncio.Event()
    release.set()
    app = _blocking_app(release, gauge)
    with TestClient(app) as c:
        for i in range(1100):
            c.get(f"/random-{i}")
    assert len(_in_progress(app)._by_path) == 1024


def test_direct_recording_exports_what_the_public_calls_export() -> None:
    """DirectSeries updates prometheus_client's values in place: the scrape must not tell."""
    durations = [0.0, 0.0002, 0.00021, 0.001, 0.0049, 0.5, 4.99, 5.0, 7.5, 1e-9]
    texts = []
    for direct in (True, False):
        registry = CollectorRegistry()
        metrics = HttpMetrics(registry)
        series = metrics.series("/predict", "POST", "2xx")
        record = metrics.recorder(series) if direct else partial(metrics.record, series)
        for i, duration in enumerate(durations):
            record(100 + i, 300 + i, duration)
        metrics.record(metrics.series("/health", "GET", "2xx"), 0, 20, 0.0003)  # the instrumentator's way
        texts.append([line for line in generate_latest(registry).decode().splitlines() if "_created" not in line])
    fresh = HttpMetrics(CollectorRegistry())
    assert isinstance(fresh.recorder(fresh.series("/predict", "POST", "2xx")).__self__, DirectSeries)  # type: ignore[attr-defined]
    assert texts[0] == texts[1]
