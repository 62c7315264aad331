"""tiers.py in this process: each link of the chain, a batch of rows in and an answer or None per row
out. The committed model answers for ModelCall; the Redis tier is a stub with RedisTier's shape
(the real one against a Redis server is tests/integration/test_cache_redis.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

import numpy as np
import pytest
from conftest import MODEL_PATH
from prometheus_client import CollectorRegistry

from housing_api.cache import RedisTier, encode_values
from housing_api.inflight import Pending
from housing_api.keys import canonical_row, row_digest, rows_matrix
from housing_api.metrics import ServiceMetrics
from housing_api.model import Model, load_model
from housing_api.schemas import SAMPLE_BATCH
from housing_api.tiers import ModelCall, RedisLookup, RedisWrites

NS = "test:0123456789abcdef:r1:"


class Store:
    """RedisTier's get_many/set_many over a dict; None from get_many is a failed round trip."""

    write_timeout_s = 0.25

    def __init__(self, values: dict[str, bytes] | None = None, up: bool = True) -> None:
        self.values = values
        self.up = up
        self.written: list[tuple[str, bytes]] = []

    def usable(self) -> bool:
        return self.up

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None] | None:
        return None if self.values is None else [self.values.get(k) for k in keys]

    async def set_many(self, items: list[tuple[str, bytes]]) -> None:
        self.written.extend(items)


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model(MODEL_PATH)


def batch() -> list[Pending]:
    return [Pending(canonical_row(r)) for r in SAMPLE_BATCH]


def lookups(registry: CollectorRegistry) -> dict[str, float | None]:
    value = registry.get_sample_value
    return {
        o: value("housing_api_cache_lookups_total", {"tier": "redis", "outcome": o})
        for o in ("hit", "miss", "error", "invalid")
    }


def lookup(store: Store | None) -> tuple[RedisLookup, CollectorRegistry]:
    registry = CollectorRegistry()
    return RedisLookup(cast(RedisTier | None, store), NS, ServiceMetrics(registry)), registry


def test_redis_answers_what_it_holds_and_counts_hits_misses_and_invalid_values() -> None:
    rows = batch()
    keys = [NS + row_digest(p.row) for p in rows]
    tier, registry = lookup(Store({keys[0]: encode_values([1.5])[0], keys[2]: b"NaN"}))
    assert asyncio.run(tier.answer(rows)) == [1.5, None, None, None]
    assert [p.key for p in rows] == keys  # kept for the write-behind
    assert lookups(registry) == {"hit": 1.0, "miss": 2.0, "error": 0.0, "invalid": 1.0}


def test_a_failed_redis_round_trip_is_a_miss_for_every_row_counted_as_errors() -> None:
    tier, registry = lookup(Store(None))
    assert asyncio.run(tier.answer(batch())) == [None] * 4
    assert lookups(registry)["error"] == 4.0
    assert tier.failed(TimeoutError()) is True  # the rows go on to the model
    assert tier.failed(asyncio.CancelledError()) is False


def test_redis_is_skipped_without_a_server_or_while_it_backs_off() -> None:
    assert lookup(None)[0].usable() is False
    assert lookup(Store({}, up=False))[0].usable() is False
    assert lookup(Store({}))[0].usable() is True


@pytest.mark.parametrize("inline_rows", [0, 1000], ids=["inference-thread", "inline"])
def test_the_model_answers_every_row_with_the_models_own_numbers(model: Model, inline_rows: int) -> None:
    registry = CollectorRegistry()
    tier = ModelCall(model, ServiceMetrics(registry), inline_rows)
    try:
        answers = asyncio.run(tier.answer(batch()))
    finally:
        tier.close()
    expected = model.predict(rows_matrix(canonical_row(r) for r in SAMPLE_BATCH))
    assert answers == expected.tolist()
    value = registry.get_sample_value
    assert (value("housing_api_model_batch_rows_sum"), value("housing_api_model_inference_seconds_count")) == (4.0, 1.0)


def test_a_non_finite_model_answer_fails_the_batch(model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    tier = ModelCall(model, ServiceMetrics(CollectorRegistry()), 1000)
    monkeypatch.setattr(model, "predict", lambda X: np.full(len(X), np.nan))
    with pytest.raises(ValueError, match="non-finite prediction for a batch of 4"):
        asyncio.run(tier.answer(batch()))
    assert tier.failed(ValueError()) is False  # its rows fail: nothing after the model answers them
    tier.close()


def test_a_model_call_over_its_bound_gets_a_fresh_inference_thread(model: Model) -> None:
    tier = ModelCall(model, ServiceMetrics(CollectorRegistry()), 0)
    before = tier._executor
    assert tier.failed(TimeoutError()) is False
    assert tier._executor is not before
    tier.close()


def test_writes_behind_store_each_computed_value_under_its_rows_key() -> None:
    store = Store({})
    registry = CollectorRegistry()
    writes = RedisWrites(cast(RedisTier, store), NS, ServiceMetrics(registry))
    rows = batch()[:2]
    rows[0].key = "kept-from-the-lookup"
    items = writes.items([(rows[0], 1.25), (rows[1], 2.5)])
    assert items == [("kept-from-the-lookup", b"1.25"), (NS + row_digest(rows[1].row), b"2.5")]
    asyncio.run(writes.write(items))
    assert store.written == items
    assert (writes.enabled(), writes.timeout_s) == (True, 0.25)
    writes.failed(items, TimeoutError())
    assert registry.get_sample_value("housing_api_redis_errors_total", {"op": "set", "reason": "timeout"}) == 1.0


def test_without_redis_nothing_is_written() -> None:
    writes = RedisWrites(None, NS, ServiceMetrics(CollectorRegistry()))
    assert (writes.enabled(), writes.timeout_s) == (False, 0.0)
