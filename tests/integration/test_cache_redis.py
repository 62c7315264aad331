"""The two cache tiers against a real redis-server, and the resolver's batching guarantees."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from conftest import RedisServer, app_client, make_settings, other_model, run, running_app, wait_until
from helpers.model_spy import GOOD, ModelSpy, rows

from housing_api.app import create_app
from housing_api.schemas import SAMPLE_BATCH
from housing_api_testing.harness import metric_value

pytestmark = pytest.mark.integration


def spy(client: Any, delay_s: float = 0.0) -> ModelSpy:
    return ModelSpy(client.app.state.service.model, delay_s)


def redis_keys(server_url: str, prefix: str) -> list[bytes]:
    import redis

    return list(redis.Redis.from_url(server_url).scan_iter(f"{prefix}:*"))


@pytest.mark.parametrize("micro_batching", [True, False])
def test_partly_cached_batch_predicts_only_missing_rows(redis_url: str, micro_batching: bool) -> None:
    prefix = make_settings().cache_prefix
    batch = rows(100)
    with app_client(redis_url=redis_url, micro_batching=micro_batching, cache_prefix=prefix) as c:
        first = c.post("/predict", json=batch[:99]).json()
        calls = spy(c)
        r = c.post("/predict", json=batch)
        assert r.status_code == 200 and r.headers["X-Cache"] == "PARTIAL"
        assert calls.calls == [1]
        assert r.json()["prediction"][:99] == first["prediction"]
    assert wait_until(lambda: len(redis_keys(redis_url, prefix)) == 100)
    with app_client(redis_url=redis_url, micro_batching=micro_batching, cache_prefix=prefix) as other:
        again = other.post("/predict", json=batch)
        assert again.headers["X-Cache"] == "HIT"  # found in Redis by a fresh instance
        assert again.json()["prediction"] == r.json()["prediction"]


def test_rows_missing_from_memory_are_found_in_redis_by_another_instance(redis_url: str) -> None:
    settings_prefix = make_settings().cache_prefix
    with app_client(redis_url=redis_url, cache_prefix=settings_prefix) as a:
        first = a.post("/predict", json=SAMPLE_BATCH).json()
    assert wait_until(lambda: len(redis_keys(redis_url, settings_prefix)) == 4)
    with app_client(redis_url=redis_url, cache_prefix=settings_prefix) as b:
        calls = spy(b)
        second = b.post("/predict", json=SAMPLE_BATCH)
        assert second.headers["X-Cache"] == "HIT"
        assert calls.calls == []
        assert second.json()["prediction"] == first["prediction"]
        metrics = b.get("/metrics").text
        assert metric_value(metrics, "housing_api_rows_served_total", source="redis") == 4


def test_each_row_is_cached_with_a_ttl(redis_url: str) -> None:
    import redis

    prefix = make_settings().cache_prefix
    with app_client(redis_url=redis_url, cache_prefix=prefix, cache_ttl_seconds=123) as c:
        c.post("/predict", json=[GOOD])
    assert wait_until(lambda: len(redis_keys(redis_url, prefix)) == 1)
    ttl = redis.Redis.from_url(redis_url).ttl(redis_keys(redis_url, prefix)[0])
    assert 0 < ttl <= 123


def test_two_model_versions_on_one_redis_never_see_each_others_values(redis_url: str, tmp_path: Any) -> None:
    other_path, other = other_model(tmp_path)
    prefix = make_settings().cache_prefix
    with app_client(redis_url=redis_url, cache_prefix=prefix) as v1:
        p1 = v1.post("/predict", json=SAMPLE_BATCH).json()
    assert wait_until(lambda: len(redis_keys(redis_url, prefix)) == 4)
    with app_client(redis_url=redis_url, cache_prefix=prefix, model_path=other_path) as v2:
        r2 = v2.post("/predict", json=SAMPLE_BATCH)
        assert r2.headers["X-Cache"] == "MISS"
        p2 = r2.json()
    assert p2["model_version"] != p1["model_version"]
    assert p2["prediction"] != p1["prediction"]
    assert p2["prediction"] == pytest.approx(
        other.predict(np.array([list(map(float, r.values())) for r in SAMPLE_BATCH])).tolist()
    )
    assert wait_until(lambda: len(redis_keys(redis_url, prefix)) == 8)


def test_redis_stopped_mid_test_still_answers_200(own_redis: RedisServer) -> None:
    with app_client(redis_url=own_redis.url, redis_timeout_ms=50) as c:
        assert c.post("/predict", json=rows(5)).status_code == 200
        assert c.get("/readyz").json()["cache"] == "ok"
        own_redis.stop()
        started = time.monotonic()
        for i in range(20):
            r = c.post("/predict", json=rows(3, start=2 + i))
            assert r.status_code == 200
            assert r.headers["X-Cache"] == "MISS"
        assert time.monotonic() - started < 5  # a dead Redis costs milliseconds, not seconds
        assert c.post("/predict", json=rows(5)).headers["X-Cache"] == "HIT"  # in-process tier
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["cache"] == "degraded"
        assert "housing_api_redis_errors_total" in c.get("/metrics").text


def test_redis_outage_is_logged_once_not_per_request(own_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    with app_client(redis_url=own_redis.url, redis_retry_interval_s=0.0) as c:
        own_redis.stop()
        for i in range(10):
            assert c.post("/predict", json=rows(2, start=5 + i)).status_code == 200
    outage_lines = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(outage_lines) == 1


def test_service_reconnects_when_redis_comes_back(own_redis: RedisServer) -> None:
    with app_client(redis_url=own_redis.url, redis_retry_interval_s=0.2) as c:
        own_redis.stop()
        c.post("/predict", json=rows(2, start=7))
        own_redis.start()
        time.sleep(0.3)
        c.post("/predict", json=rows(2, start=8))
        assert c.get("/readyz").json()["cache"] == "ok"


def test_unreachable_redis_at_startup_starts_degraded() -> None:
    from housing_api_testing.harness import free_port

    with app_client(redis_url=f"redis://127.0.0.1:{free_port()}/0") as c:
        assert c.post("/predict", json=SAMPLE_BATCH).status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["cache"] == "degraded"


def test_concurrent_identical_misses_are_computed_once() -> None:
    async def scenario() -> list[int]:
        app = create_app(make_settings(inline_predict_rows=0))
        async with running_app(app) as c:
            calls = ModelSpy(app.state.service.model, delay_s=0.05)
            same = [{**GOOD, "MedInc": 3.14159}]
            responses = await asyncio.gather(*(c.post("/predict", json=same) for _ in range(20)))
            assert all(r.status_code == 200 for r in responses)
            assert len({r.json()["prediction"][0] for r in responses}) == 1
            return calls.calls

    assert run(scenario()) == [1]


def test_rows_from_concurrent_requests_share_model_calls() -> None:
    async def scenario() -> list[int]:
        app = create_app(make_settings(inline_predict_rows=0))
        async with running_app(app) as c:
            calls = ModelSpy(app.state.service.model, delay_s=0.05)
            bodies = [[{**GOOD, "MedInc": 1 + i}] for i in range(12)]
            responses = await asyncio.gather(*(c.post("/predict", json=b) for b in bodies))
            assert all(r.status_code == 200 for r in responses)
            return calls.calls

    calls = run(scenario())
    assert sum(calls) == 12
    assert len(calls) < 12  # rows queued while the model ran went in together


def test_livez_answers_while_a_large_batch_is_predicted() -> None:
    async def scenario() -> tuple[float, bool]:
        app = create_app(make_settings())
        async with running_app(app) as c:
            ModelSpy(app.state.service.model, delay_s=1.0)
            big = asyncio.create_task(c.post("/predict", json=rows(1000, start=20)))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            live = await c.get("/livez")
            elapsed = time.monotonic() - started
            assert live.status_code == 200
            pending = not big.done()
            assert (await big).status_code == 200
            return elapsed, pending

    elapsed, still_predicting = run(scenario())
    assert still_predicting  # /livez answered while the model was busy
    assert elapsed < 0.5
