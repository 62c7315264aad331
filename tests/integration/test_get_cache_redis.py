"""GET /predict's response cache in Redis (http_cache.py): a poisoned or misplaced entry is never served,
a miss does not wait for its write, HTTP_CACHE_MAX_AGE=0 turns it off. Real redis-server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import RedisServer, app_client, make_settings, wait_until
from fastapi import FastAPI
from helpers.poison import GET_POISON, http_key

from housing_api.schemas import SAMPLE_BATCH

pytestmark = pytest.mark.integration


ROW = SAMPLE_BATCH[0]


def metric(app: FastAPI, name: str, **labels: str) -> float:
    return app.state.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("poison", GET_POISON, ids=lambda p: repr(p[:12]))
def test_a_poisoned_get_response_entry_is_a_miss_and_is_replaced(
    own_redis: RedisServer, truth: Callable[[dict[str, Any]], float], poison: bytes
) -> None:
    settings = make_settings(redis_url=own_redis.url)
    with app_client(**settings.model_dump()) as c:
        key = http_key(settings.cache_prefix, c.app.state.service.model.version, ROW)
        own_redis.client().set(key, poison, ex=60)
        r = c.get("/predict", params=ROW)
        assert r.status_code == 200 and r.json()["prediction"] == [truth(ROW)]
        assert metric(c.app, "housing_api_cache_lookups_total", tier="http", outcome="invalid") == 1
        assert wait_until(lambda: own_redis.client().get(key) not in (None, poison))


def test_a_get_entry_for_another_row_is_not_served(own_redis: RedisServer) -> None:
    other = {**ROW, "MedInc": 2.5}
    settings = make_settings(redis_url=own_redis.url)
    with app_client(**settings.model_dump()) as c:
        version = c.app.state.service.model.version
        right = c.get("/predict", params=other).content  # a complete, valid entry, but for `other`
        own_redis.client().set(http_key(settings.cache_prefix, version, ROW), right, ex=60)
    with app_client(**settings.model_dump()) as fresh:
        r = fresh.get("/predict", params=ROW)
        assert r.json()["inputs"][0]["MedInc"] == ROW["MedInc"]


def test_a_get_miss_does_not_wait_for_its_redis_write(own_redis: RedisServer) -> None:
    settings = make_settings(redis_url=own_redis.url)
    with app_client(**settings.model_dump()) as c:
        key = http_key(settings.cache_prefix, c.app.state.service.model.version, ROW)
        own_redis.client().execute_command("CLIENT", "PAUSE", "1000", "WRITE")  # < the write timeout
        r = c.get("/predict", params=ROW)
        # Answered while Redis still refuses writes: the response did not wait for its write.
        assert r.status_code == 200 and own_redis.client().get(key) is None
        assert wait_until(lambda: own_redis.client().get(key) is not None, 10)


def test_http_cache_max_age_zero_turns_the_get_cache_off_per_app(own_redis: RedisServer) -> None:
    for ages in ((60, 0), (0, 60)):  # whichever app starts first, each keeps its own
        first, second = (make_settings(redis_url=own_redis.url, http_cache_max_age=age) for age in ages)
        with app_client(**first.model_dump()) as a, app_client(**second.model_dump()) as b:
            for c, settings in ((a, first), (b, second)):
                c.get("/predict", params=ROW)
                r = c.get("/predict", params=ROW)
                hits = metric(c.app, "housing_api_cache_lookups_total", tier="http", outcome="hit")
                key = http_key(settings.cache_prefix, c.app.state.service.model.version, ROW)
                if settings.http_cache_max_age == 0:
                    assert hits == 0 and "max-age=0" in r.headers["Cache-Control"]
                    time.sleep(0.2)
                    assert own_redis.client().get(key) is None
                else:
                    assert hits == 1 and "max-age=" in r.headers["Cache-Control"]
                    assert wait_until(lambda key=key: own_redis.client().get(key) is not None)
