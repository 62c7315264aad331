"""The real thing: `housing-api serve` in its own process, talked to over HTTP like a user would."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import RedisServer, Server

from housing_api.schemas import SAMPLE_BATCH

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    redis = RedisServer(tmp_path).start()
    s = Server({"REDIS_URL": redis.url})
    try:
        s.wait_ready()
        yield s
    finally:
        if s.proc.poll() is None:
            s.stop()
        redis.stop()


def test_readme_example_returns_four_predictions_and_then_hits(server: Server) -> None:
    first = httpx.post(server.url + "/predict", json=SAMPLE_BATCH)
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    assert len(first.json()["prediction"]) == 4
    second = httpx.post(server.url + "/predict", json=SAMPLE_BATCH)
    assert second.headers["x-cache"] == "HIT"
    assert second.json() == first.json()
    assert httpx.get(server.url + "/readyz").json()["cache"] == "ok"


def test_sigterm_exits_cleanly(server: Server) -> None:
    assert httpx.get(server.url + "/health").json() == {"status": "healthy"}
    assert server.stop() == 0


@pytest.mark.serial  # the drain's grace period, under load that parallel workers would slow
def test_sigterm_under_load_finishes_every_accepted_request_and_flushes_the_cache(tmp_path: Path) -> None:
    import asyncio

    redis = RedisServer(tmp_path).start()
    server = Server({"REDIS_URL": redis.url, "CACHE_PREFIX": "drain"})
    try:
        server.wait_ready()
        batches = [[{**SAMPLE_BATCH[0], "MedInc": 1 + i + j / 1000} for j in range(1000)] for i in range(12)]

        async def load() -> list[int]:
            limits = httpx.Limits(max_connections=len(batches))
            async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as c:
                tasks = [asyncio.create_task(c.post("/predict", json=b)) for b in batches]
                await asyncio.sleep(0.3)  # requests are in flight, rows queued for the model
                server.proc.send_signal(signal.SIGTERM)
                results = await asyncio.gather(*tasks, return_exceptions=True)
                return [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in results]

        statuses = asyncio.run(load())
        assert statuses == [200] * len(batches)  # no reset connection, no 5xx
        assert server.proc.wait(timeout=60) == 0
        written = sum(1 for _ in redis.client().scan_iter("drain:*", count=10_000))
        assert written == 12_000  # the write-behind queue was flushed before exit
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
        redis.stop()
