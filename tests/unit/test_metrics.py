"""What /metrics exports, and that it reads true: in-process, no Prometheus needed."""

from __future__ import annotations

import asyncio
import gc
import itertools
import re
from typing import Any

from conftest import ROOT, app_client, make_settings, run, running_app
from prometheus_client.parser import text_string_to_metric_families

from housing_api.app import create_app
from housing_api.schemas import SAMPLE_BATCH
from housing_api_testing.prom import exported_series, scraped


def test_the_service_exports_exactly_the_documented_metrics() -> None:
    with app_client() as c:
        c.post("/predict", json=SAMPLE_BATCH)
        c.post("/predict", json=[{**SAMPLE_BATCH[0], "MedInc": -1}])
        c.get("/predict", params=SAMPLE_BATCH[0])
        exported = scraped(c.get("/metrics").text)
    assert exported == {name: set(labels) for name, labels in exported_series().items()}


def test_every_label_value_exists_before_the_first_event() -> None:
    with app_client() as c:
        series = [s for f in text_string_to_metric_families(c.get("/metrics").text) for s in f.samples]
    values = {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "model_version"))) for s in series}
    for tier, outcome in [("memory", "hit"), ("redis", "error"), ("http", "miss")]:
        assert ("housing_api_cache_lookups_total", (("outcome", outcome), ("tier", tier))) in values
    for op in ("ping", "get", "set"):
        assert ("housing_api_redis_errors_total", (("op", op), ("reason", "unreachable"))) in values
    for reason in ("inflight_full", "queue_full"):
        assert ("housing_api_rejected_requests_total", (("reason", reason),)) in values
    for outcome in ("compared", "stable_missing", "invalid", "dropped"):
        assert ("housing_api_drift_rows_total", (("outcome", outcome),)) in values
    assert ("housing_api_prediction_drift_count", ()) in values


ALERT_RULES = ROOT / "prometheus" / "alerts.yaml"
TARGET_LABELS = frozenset({"job", "namespace", "pod", "instance"})  # Prometheus's, not the app's


def selected_label_values(rules_text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """(series, label values) of every app series a rule selects by value: `status="5xx"`, and each
    alternative of `reason=~"readonly|oom"`, one combination per tuple."""
    selected = set()
    for metric, matchers in re.findall(r"([a-z_]\w*)\{([^}]*)\}", rules_text):
        if metric not in exported_series():
            continue
        values = {
            label: pattern.split("|") if op == "=~" else [pattern]
            for label, op, pattern in re.findall(r'(\w+)\s*(=~|=)\s*"([^"]*)"', matchers)
            if label not in TARGET_LABELS
        }
        for combination in itertools.product(*values.values()):
            selected.add((metric, tuple(sorted(zip(values, combination, strict=True)))))
    return selected


def test_every_series_an_alert_selects_exists_before_the_first_event() -> None:
    # A counter born at 1 (a pod's first 5xx) adds nothing to increase() or rate(): it must exist at 0.
    wanted = selected_label_values(ALERT_RULES.read_text())
    assert ("http_requests_total", (("handler", "/predict"), ("status", "5xx"))) in wanted
    assert ("housing_api_redis_errors_total", (("op", "set"), ("reason", "oom"))) in wanted
    with app_client() as c:
        samples = [s for f in text_string_to_metric_families(c.get("/metrics").text) for s in f.samples]
    missing = [
        (name, dict(labels))
        for name, labels in sorted(wanted)
        if not any(s.name == name and dict(labels).items() <= s.labels.items() for s in samples)
    ]
    assert missing == []


def test_queue_depth_is_read_when_scraped() -> None:
    async def scenario() -> tuple[float | None, float | None]:
        app = create_app(make_settings())
        async with running_app(app):
            resolver = app.state.service.resolver
            registry = app.state.metrics.registry
            # Rows queued without waking the worker: the depth a scrape sees while the model is busy.
            resolver.predictor.queue.extend([object()] * 7)
            during = registry.get_sample_value("housing_api_queue_rows", {"stage": "model"})
            resolver.predictor.queue.clear()
            after = registry.get_sample_value("housing_api_queue_rows", {"stage": "model"})
        return during, after

    assert run(scenario()) == (7, 0)


def test_requests_in_flight_are_read_when_scraped() -> None:
    async def scenario() -> tuple[float | None, float | None]:
        app = create_app(make_settings())
        async with running_app(app):
            value = app.state.metrics.registry.get_sample_value
            async with app.state.service.admitted(), app.state.service.admitted():
                during = value("housing_api_inflight_requests")
            after = value("housing_api_inflight_requests")
        return during, after

    assert run(scenario()) == (2, 0)


def test_get_predict_counts_the_response_cache_as_the_http_tier() -> None:
    with app_client() as c:
        assert c.get("/predict", params=SAMPLE_BATCH[0]).headers["X-Cache"] == "MISS"
        assert c.get("/predict", params=SAMPLE_BATCH[0]).headers["X-Cache"] == "HIT"
        registry = c.app.state.metrics.registry  # type: ignore[attr-defined]
    value = registry.get_sample_value
    assert value("housing_api_cache_lookups_total", {"tier": "http", "outcome": "hit"}) == 1
    assert value("housing_api_cache_lookups_total", {"tier": "http", "outcome": "miss"}) == 1
    assert value("housing_api_rows_served_total", {"source": "http"}) == 1
    assert value("housing_api_rows_served_total", {"source": "model"}) == 1  # the miss, not counted twice


def test_a_full_write_queue_counts_the_rows_it_drops(redis_url: str) -> None:
    async def scenario() -> tuple[float | None, float | None]:
        app = create_app(make_settings(redis_url=redis_url, max_queued_rows=4, max_batch_rows=4))
        async with running_app(app) as c:
            value = app.state.metrics.registry.get_sample_value
            resolver = app.state.service.resolver
            before = value("housing_api_redis_write_dropped_total")
            await asyncio.sleep(0.05)  # the workers' first turn: the writer now waits to be woken
            # A write queue that a stalled Redis has let fill up (queued without waking the writer).
            prefix = app.state.settings.cache_prefix
            resolver.writer.queue.extend((f"{prefix}:stalled-{i}", b"1.0") for i in range(4))
            rows = [{**SAMPLE_BATCH[0], "MedInc": 20 + i} for i in range(3)]
            assert (await c.post("/predict", json=rows)).status_code == 200
            return before, value("housing_api_redis_write_dropped_total")

    assert run(scenario()) == (0, 3)


def test_garbage_collections_are_timed_while_the_app_runs() -> None:
    def full_collections(app: Any) -> float | None:
        value = app.state.metrics.registry.get_sample_value
        return value("housing_api_gc_pause_seconds_count", {"generation": "2"})

    async def scenario() -> tuple[float | None, float | None, float | None]:
        app = create_app(make_settings())
        async with running_app(app):
            before = full_collections(app)
            gc.collect()
            during = full_collections(app)
        gc.collect()
        return before, during, full_collections(app)

    before, during, after = run(scenario())
    assert before is not None and during == before + 1 == after  # counted once; not after shutdown
    assert not any(getattr(cb, "__self__", None).__class__.__name__ == "GcPauses" for cb in gc.callbacks)
