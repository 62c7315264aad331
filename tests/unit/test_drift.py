"""drift.py in this process: which rows are sampled, and what the comparison with the stable version's
cached answers records. The stable store is a stub with Redis' get_many shape (the real one against
a Redis server is tests/integration/test_drift_live.py)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from housing_api.cache import RedisTier, encode_values
from housing_api.drift import DriftCheck, DriftConfig
from housing_api.inflight import Pending
from housing_api.keys import cache_keys, canonical_row
from housing_api.metrics import ServiceMetrics
from housing_api.schemas import SAMPLE_BATCH

STABLE = "stable:0123456789abcdef:r1:"
ROWS = [canonical_row(r) for r in SAMPLE_BATCH]


class StableStore:
    """Redis' get_many: the stable version's values by key, or None for a failed round trip."""

    def __init__(self, values: dict[str, bytes] | None) -> None:
        self.values = values
        self.asked: list[list[str]] = []

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None] | None:
        self.asked.append(list(keys))
        if self.values is None:
            return None
        return [self.values.get(k) for k in keys]


def check(store: StableStore, sample: float = 1.0) -> tuple[DriftCheck, CollectorRegistry]:
    registry = CollectorRegistry()
    return DriftCheck(cast(RedisTier, store), STABLE, sample, ServiceMetrics(registry)), registry


def rows_counted(registry: CollectorRegistry) -> dict[str, float | None]:
    outcomes = ("compared", "stable_missing", "invalid", "dropped")
    return {o: registry.get_sample_value("housing_api_drift_rows_total", {"outcome": o}) for o in outcomes}


def drift_observed(registry: CollectorRegistry) -> tuple[float | None, float | None]:
    value = registry.get_sample_value
    return value("housing_api_prediction_drift_count"), value("housing_api_prediction_drift_sum")


def stored(*values: float) -> dict[str, bytes]:
    return dict(zip(cache_keys(STABLE, ROWS), encode_values(values), strict=False))


@pytest.mark.parametrize(
    ("stable", "sample", "served", "redis", "active"),
    [
        ("a0dd6c52d3640066", 0.1, "ffff" * 16, True, True),
        ("a0dd6c52d3640066", 0.1, "a0dd6c52d3640066" + "0" * 48, True, False),  # its own version
        ("", 0.1, "ffff" * 16, True, False),  # no stable version named
        ("a0dd6c52d3640066", 0.0, "ffff" * 16, True, False),  # nothing sampled
        ("a0dd6c52d3640066", 0.1, "ffff" * 16, False, False),  # no Redis, no stable answers
    ],
)
def test_drift_is_active_only_against_another_version_with_a_sample_and_redis(
    stable: str, sample: float, served: str, redis: bool, active: bool
) -> None:
    config = DriftConfig.of(stable, sample, served, redis)
    assert (config.stable_model_version, config.sample, config.active) == (stable, sample, active)


def test_every_answered_row_is_sampled_at_one_and_none_at_zero() -> None:
    answered = [(Pending(row), float(i)) for i, row in enumerate(ROWS)]
    assert check(StableStore({}), 1.0)[0].sampled(answered) == [(row, float(i)) for i, row in enumerate(ROWS)]
    assert check(StableStore({}), 0.0)[0].sampled(answered) == []


def test_rows_are_drawn_independently_at_the_sample_share(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([0.05, 0.5, 0.29, 0.3])
    monkeypatch.setattr(random, "random", lambda: next(draws))
    answered = [(Pending(row), float(i)) for i, row in enumerate(ROWS)]
    assert check(StableStore({}), 0.3)[0].sampled(answered) == [(ROWS[0], 0.0), (ROWS[2], 2.0)]


def test_the_absolute_difference_from_the_stable_answer_is_observed() -> None:
    store = StableStore(stored(4.0, 2.5))
    drift, registry = check(store)
    asyncio.run(drift.compare([(ROWS[0], 4.25), (ROWS[1], 2.0)]))
    assert store.asked == [cache_keys(STABLE, ROWS[:2])]  # under the stable version's keys, one MGET
    assert drift_observed(registry) == (2.0, 0.75)  # |4.25 - 4.0| + |2.0 - 2.5|
    assert rows_counted(registry) == {"compared": 2.0, "stable_missing": 0.0, "invalid": 0.0, "dropped": 0.0}


def test_a_row_without_a_stable_answer_or_with_a_bad_one_is_counted_not_compared() -> None:
    values = stored(4.0)
    values[cache_keys(STABLE, ROWS[1:2])[0]] = b"not a prediction"
    drift, registry = check(StableStore(values))
    asyncio.run(drift.compare([(ROWS[0], 4.0), (ROWS[1], 1.0), (ROWS[2], 1.0)]))
    assert drift_observed(registry) == (1.0, 0.0)
    assert rows_counted(registry) == {"compared": 1.0, "stable_missing": 1.0, "invalid": 1.0, "dropped": 0.0}


def test_a_failed_lookup_or_a_failed_batch_drops_its_rows() -> None:
    drift, registry = check(StableStore(None))
    batch: list[Any] = [(ROWS[0], 1.0), (ROWS[1], 1.0)]
    asyncio.run(drift.compare(batch))
    drift.failed(batch[:1], TimeoutError())
    assert drift_observed(registry) == (0.0, 0.0)
    assert rows_counted(registry)["dropped"] == 3.0
