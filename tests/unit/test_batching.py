"""The resolution chain: declared once, in order, and run the same way with or without micro-batching."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import app_client, wait_until

from housing_api.schemas import SAMPLE_BATCH


def rows(n: int, start: float) -> list[dict[str, Any]]:
    return [{**SAMPLE_BATCH[0], "MedInc": start + i / 1013} for i in range(n)]


def counts(client: Any) -> dict[str, float]:
    value = client.app.state.metrics.registry.get_sample_value
    lookups = {
        f"redis {o}": value("housing_api_cache_lookups_total", {"tier": "redis", "outcome": o}) for o in ("hit", "miss")
    }
    served = {s: value("housing_api_rows_served_total", {"source": s}) for s in ("memory", "redis", "model")}
    return {**lookups, **served, "model calls": value("housing_api_model_batch_rows_count")}


def test_the_chain_is_memory_then_redis_then_the_model_with_writes_behind(redis_url: str) -> None:
    with app_client(redis_url=redis_url) as c:
        resolver = c.app.state.service.resolver
        assert [tier.name for tier in resolver.tiers] == ["redis", "model"]
        assert [stage.name for stage in resolver.stages] == ["redis", "model", "redis_write"]
        assert resolver.memory.capacity == c.app.state.settings.memory_cache_rows


@pytest.mark.parametrize("micro_batching", [True, False])
def test_both_modes_count_a_row_the_same_way_at_every_tier(redis_url: str, micro_batching: bool) -> None:
    batch = rows(5, 30.0 + micro_batching)
    with app_client(redis_url=redis_url, memory_cache_rows=0) as writer:
        writer.post("/predict", json=batch[:3])  # three rows on their way to Redis
    with app_client(redis_url=redis_url, cache_prefix=writer.app.state.settings.cache_prefix,
                    micro_batching=micro_batching) as c:  # fmt: skip
        assert wait_until(lambda: c.post("/predict", json=batch[:1]).headers["X-Cache"] == "HIT")
        before = counts(c)
        assert c.post("/predict", json=batch).headers["X-Cache"] == "PARTIAL"
        after = counts(c)
        assert c.post("/predict", json=batch).headers["X-Cache"] == "HIT"
        from_memory = counts(c)["memory"] - after["memory"]
    delta = {k: after[k] - (before[k] or 0) for k in after}
    assert delta == {"redis hit": 2, "redis miss": 2, "memory": 1, "redis": 2, "model": 2, "model calls": 1}
    assert from_memory == 5  # every answer was kept in memory, the Redis hits too
