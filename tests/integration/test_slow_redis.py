"""A slow or paused Redis costs at most its timeout: slow writes are not an outage, paused reads are
misses, slow replies add at most REDIS_TIMEOUT_MS. Real redis-server."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from conftest import RedisServer, app_client, make_settings, wait_until
from fastapi import FastAPI
from helpers.faulty_model import fresh_rows
from helpers.model_spy import rows

from housing_api.schemas import SAMPLE_BATCH

pytestmark = pytest.mark.integration


class DelayProxy:
    """A TCP proxy that holds every chunk from Redis for `delay_s`: a Redis that answers slowly."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.delay_s), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, delay_s: float) -> None:
        try:
            while data := src.recv(65536):
                time.sleep(delay_s)
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()


@pytest.mark.serial  # a bound on added latency: parallel workers would skew it
@pytest.mark.integration
def test_a_slow_redis_adds_at_most_the_configured_timeout(own_redis: RedisServer) -> None:
    proxy = DelayProxy(own_redis.port, delay_s=2.0)
    try:
        with app_client(redis_url=f"redis://127.0.0.1:{proxy.port}/0", redis_timeout_ms=100) as c:
            for i in range(5):
                started = time.monotonic()
                r = c.post("/predict", json=rows(2, start=70 + i))
                elapsed = time.monotonic() - started
                assert r.status_code == 200
                assert elapsed < 1.0, elapsed  # bounded by the 100 ms timeout, not the 2 s Redis delay
            assert c.get("/readyz").json()["cache"] == "degraded"
    finally:
        proxy.close()


ROW = SAMPLE_BATCH[0]


def metric(app: FastAPI, name: str, **labels: str) -> float:
    return app.state.metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_slow_write_is_not_an_outage(own_redis: RedisServer) -> None:
    settings = make_settings(redis_url=own_redis.url)
    with app_client(**settings.model_dump()) as c:
        resolver = c.app.state.service.resolver
        own_redis.client().execute_command(
            "CLIENT", "PAUSE", str(int(resolver.redis.write_timeout_s * 1000 + 1500)), "WRITE"
        )
        assert c.post("/predict", json=[{**ROW, "MedInc": 3.3}]).status_code == 200
        # The write-behind times out while writes are paused ...
        assert wait_until(lambda: metric(c.app, "housing_api_redis_errors_total", op="set", reason="timeout") >= 1, 10)
        # ... and Redis stays in use for reads.
        assert not resolver.redis.degraded and metric(c.app, "housing_api_redis_up") == 1


def test_redis_paused_for_reads_costs_a_timeout_not_a_wedge(own_redis: RedisServer) -> None:
    with app_client(redis_url=own_redis.url, redis_timeout_ms=100) as c:
        own_redis.client().execute_command("CLIENT", "PAUSE", "1500", "ALL")
        r = c.post("/predict", json=fresh_rows(4, 6.0))
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
        assert c.app.state.service.resolver.redis.degraded
        assert c.post("/predict", json=fresh_rows(4, 6.5)).status_code == 200
