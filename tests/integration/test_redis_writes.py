"""The write-behind's one command per micro-batch, against a real redis-server.

RedisTier.set_many sends SET_EX_SCRIPT with every key and value of the batch (one EVALSHA, one
reply) instead of a pipeline of SET commands. These tests hold it to what the pipeline did (every
row stored with its TTL) and check the cases where a script cannot run.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import RedisServer
from prometheus_client import CollectorRegistry

from housing_api.cache import RedisTier, encode_value
from housing_api.metrics import ServiceMetrics

pytestmark = pytest.mark.integration
TTL = 600


def items(n: int, prefix: str = "w") -> list[tuple[str, bytes]]:
    return [(f"{prefix}:{i:032x}", encode_value(i / 7)) for i in range(n)]


def set_many(url: str, *batches: list[tuple[str, bytes]]) -> list[bool]:
    """set_many for each batch in turn, on one RedisTier (as the write stage does)."""

    async def go() -> list[bool]:
        tier = RedisTier(
            url, timeout_s=1.0, ttl_s=TTL, retry_interval_s=1.0, metrics=ServiceMetrics(CollectorRegistry())
        )
        try:
            return [await tier.set_many(batch) for batch in batches]
        finally:
            await tier.close()

    return asyncio.run(go())


def calls(server: RedisServer, command: str) -> int:
    stats: dict[str, Any] = server.client().info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def assert_stored(server: RedisServer, batch: list[tuple[str, bytes]]) -> None:
    client = server.client()
    assert client.mget([k for k, _ in batch]) == [v for _, v in batch]
    ttls = [client.ttl(k) for k, _ in batch]
    assert all(TTL - 5 <= t <= TTL for t in ttls), ttls


def test_a_micro_batch_is_written_with_one_command_and_every_ttl(own_redis: RedisServer) -> None:
    # The first write loads the script (NOSCRIPT, SCRIPT LOAD, EVALSHA); every later batch is one command.
    first, second = items(3, "first"), items(500, "second")
    assert set_many(own_redis.url, first) == [True]
    evalsha, sets = calls(own_redis, "evalsha"), calls(own_redis, "set")
    assert set_many(own_redis.url, second) == [True]
    assert calls(own_redis, "evalsha") == evalsha + 1  # one command from the client ...
    assert calls(own_redis, "set") == sets + 500  # ... and Redis ran the 500 SETs
    assert_stored(own_redis, first + second)


def test_a_flushed_script_cache_is_reloaded(own_redis: RedisServer) -> None:
    set_many(own_redis.url, items(3, "first"))
    own_redis.client().script_flush()
    batch = items(3, "second")
    assert set_many(own_redis.url, batch) == [True]
    assert_stored(own_redis, batch)


def test_a_redis_that_refuses_scripts_gets_a_pipeline(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer(tmp_path, "--rename-command", "EVALSHA", "", "--rename-command", "EVAL", "").start()
    try:
        first, second = items(4, "a"), items(4, "b")
        with caplog.at_level(logging.WARNING, logger="housing_api.cache"):
            assert set_many(server.url, first, second) == [True, True]
        assert_stored(server, first + second)
        assert calls(server, "set") == 8
        assert sum("refuses scripts" in r.getMessage() for r in caplog.records) == 1  # said once
    finally:
        server.stop()
