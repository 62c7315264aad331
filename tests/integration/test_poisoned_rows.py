"""A row's value in Redis that this release would not have written (text, NaN, 1e999, JSON, a huge
string) is a miss, recomputed and overwritten, and never blocks a later request. Real redis-server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import RedisServer, app_client, make_settings, wait_until
from fastapi import FastAPI
from helpers.poison import POISON, row_key

from housing_api.schemas import SAMPLE_BATCH

pytestmark = pytest.mark.integration


ROW = SAMPLE_BATCH[0]


def metric(app: FastAPI, name: str, **labels: str) -> float:
    return app.state.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("poison", POISON, ids=lambda p: repr(p[:12]))
def test_a_poisoned_row_value_is_a_miss_and_is_overwritten(
    own_redis: RedisServer, truth: Callable[[dict[str, Any]], float], poison: bytes
) -> None:
    settings = make_settings(redis_url=own_redis.url)
    with app_client(**settings.model_dump()) as c:
        key = row_key(settings.cache_prefix, c.app.state.service.model.version, ROW)
        own_redis.client().set(key, poison)
        r = c.post("/predict", json=[ROW])
        assert r.status_code == 200
        assert r.json()["prediction"] == [truth(ROW)]
        assert r.headers["X-Cache"] == "MISS"  # not a HIT on a value nobody can trust
        assert metric(c.app, "housing_api_cache_lookups_total", tier="redis", outcome="invalid") == 1
        assert wait_until(lambda: own_redis.client().get(key) == repr(truth(ROW)).encode())
        # The fixed value is a hit for the next fresh process.
    with app_client(**settings.model_dump()) as again:
        r = again.post("/predict", json=[ROW])
        assert r.headers["X-Cache"] == "HIT" and r.json()["prediction"] == [truth(ROW)]


def test_a_poisoned_row_never_blocks_later_requests(own_redis: RedisServer) -> None:
    """The wedge of the issue: one bad value, then every later Redis-bound request waited forever."""
    settings = make_settings(redis_url=own_redis.url, memory_cache_rows=0, request_timeout_s=2)
    with app_client(**settings.model_dump()) as c:
        own_redis.client().set(row_key(settings.cache_prefix, c.app.state.service.model.version, ROW), b"abc")
        assert c.post("/predict", json=[ROW]).status_code == 200
        for i in range(5):
            r = c.post("/predict", json=[{**ROW, "MedInc": 2 + i}])
            assert r.status_code == 200
        assert c.get("/readyz").status_code == 200
        assert c.app.state.service.inflight == 0 and len(c.app.state.service.resolver.inflight) == 0
