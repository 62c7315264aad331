"""Redis faults that are seen: error replies told apart from an unreachable server (issue 21, #6 #7).

Each fault is made for real on a throwaway redis-server: a replica (REPLICAOF a second server) for
READONLY, maxmemory 1 with noeviction for OOM, requirepass for NOAUTH, a list under the exact key for
WRONGTYPE. The service must count each under its own reason, say it once per burst, show a Redis that
refuses writes on /readyz (still ready: the cache is optional), and never read an error reply from a
server that answers as an outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RedisServer, app_client, make_settings, wait_until
from fastapi import FastAPI
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from housing_api.http_cache import ENCODING as HTTP_ENCODING
from housing_api.keys import canonical_row, row_digest
from housing_api.schemas import SAMPLE_BATCH

pytestmark = pytest.mark.integration
ROW = SAMPLE_BATCH[0]
# Spelled out rather than imported from housing_api.redis_faults, so that this module still runs (and
# its behaviour tests fail one by one) against a checkout from before the reasons existed.
REASONS = ("unreachable", "timeout", "noauth", "noperm", "readonly", "oom", "wrongtype", "reply")


def rows(n: int, start: float) -> list[dict[str, float]]:
    return [{**ROW, "MedInc": start + i / 997} for i in range(n)]


def errors(app: FastAPI, op: str, reason: str) -> float:
    value = app.state.metrics.registry.get_sample_value("housing_api_redis_errors_total", {"op": op, "reason": reason})
    return value or 0.0


def redis_up(app: FastAPI) -> float | None:
    value: float | None = app.state.metrics.registry.get_sample_value("housing_api_redis_up")
    return value


def said(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records if r.name == "housing_api.cache")


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[RedisServer]:
    """A real read-only replica: a second server following a throwaway master."""
    (tmp_path / "master").mkdir()
    (tmp_path / "replica").mkdir()
    master = RedisServer(tmp_path / "master").start()
    server = RedisServer(tmp_path / "replica").start()
    try:
        client = server.client()
        client.config_set("replica-read-only", "yes")
        client.execute_command("REPLICAOF", "127.0.0.1", str(master.port))
        assert wait_until(lambda: client.info("replication")["master_link_status"] == "up", 10)
        yield server
    finally:
        server.stop()
        master.stop()


# --- the classification: one reason per kind of failure ---------------------------------------------


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (TimeoutError(), "timeout"),
        (RedisTimeoutError("Timeout reading from socket"), "timeout"),
        (RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."), "unreachable"),
        (ConnectionResetError(), "unreachable"),
        (BusyLoadingError("Redis is loading the dataset in memory"), "unreachable"),
        (AuthenticationError("Authentication required."), "noauth"),
        (ReadOnlyError("You can't write against a read only replica."), "readonly"),
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "oom"),
        (NoPermissionError("User x has no permissions to run the 'flushall' command"), "noperm"),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), "wrongtype"),
        # A write inside the write-behind script: the inner reply's code inside the script's error.
        (ResponseError("ERR Error running script: @user_script:3: -READONLY You can't write"), "readonly"),
        (ResponseError("BUSY Redis is busy running a script"), "reply"),
    ],
)
def test_each_failure_has_its_own_reason(exc: BaseException, reason: str) -> None:
    from housing_api import redis_faults

    assert redis_faults.classify(exc) == reason and redis_faults.REASONS == REASONS


def test_every_reason_exists_before_the_first_error() -> None:
    with app_client() as c:
        for op in ("ping", "get", "set"):
            for reason in REASONS:
                assert errors(c.app, op, reason) == 0.0 and f'reason="{reason}"' in c.get("/metrics").text


# --- writes refused: READONLY and OOM ---------------------------------------------------------------


def _refused_writes_are_seen(
    server: RedisServer, reason: str, cache: str, caplog: pytest.LogCaptureFixture
) -> None:  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="housing_api.cache"), app_client(redis_url=server.url) as c:
        for i in range(5):
            assert c.post("/predict", json=rows(3, start=1 + i)).status_code == 200
            assert wait_until(lambda i=i: errors(c.app, "set", reason) >= i + 1, 10)
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() | {"model_version": ""} == {
            "status": "ready", "model_version": "", "cache": cache, "cache_reason": reason,
        }  # fmt: skip
        # Not an outage: reads go on (redis_up 1, nothing degraded), nor a generic error.
        assert redis_up(c.app) == 1 and not c.app.state.service.resolver.redis.degraded
        assert errors(c.app, "set", "reply") == errors(c.app, "set", "unreachable") == 0
        assert c.post("/predict", json=rows(3, start=1)).headers["X-Cache"] == "HIT"  # in-process tier
    assert said(caplog, f"Redis refuses writes ({reason}") == 1  # once per burst, with its reason
    assert said(caplog, "Redis unavailable") == 0


def test_a_read_only_replica_is_counted_logged_and_shown_on_readyz(
    replica: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    _refused_writes_are_seen(replica, "readonly", "readonly", caplog)


def test_a_full_redis_is_counted_logged_and_shown_on_readyz(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    own_redis.client().config_set("maxmemory-policy", "noeviction")
    own_redis.client().config_set("maxmemory", "1")
    _refused_writes_are_seen(own_redis, "oom", "full", caplog)


def test_a_refused_write_stops_showing_once_a_write_lands(own_redis: RedisServer) -> None:
    own_redis.client().config_set("maxmemory-policy", "noeviction")
    own_redis.client().config_set("maxmemory", "1")
    with app_client(redis_url=own_redis.url) as c:
        c.post("/predict", json=rows(2, start=3))
        assert wait_until(lambda: c.get("/readyz").json()["cache"] == "full", 10)
        own_redis.client().config_set("maxmemory", "0")
        c.post("/predict", json=rows(2, start=4))
        assert wait_until(lambda: c.get("/readyz").json()["cache"] == "ok", 10)


# --- NOAUTH: Redis out of use, with its reason --------------------------------------------------------


def test_a_redis_that_wants_a_password_is_an_outage_named_noauth(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    own_redis.client().config_set("requirepass", "s3cret-pw")
    with caplog.at_level(logging.WARNING, logger="housing_api.cache"), app_client(redis_url=own_redis.url) as c:
        for i in range(3):
            assert c.post("/predict", json=rows(2, start=6 + i)).status_code == 200
        ready = c.get("/readyz").json()
        assert (ready["cache"], ready["cache_reason"]) == ("degraded", "noauth")
        assert redis_up(c.app) == 0 and errors(c.app, "ping", "noauth") + errors(c.app, "get", "noauth") >= 1
    assert said(caplog, "Redis unavailable (noauth") == 1


def test_a_wrong_password_is_noauth_and_never_printed(own_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    own_redis.client().config_set("requirepass", "s3cret-pw")
    with caplog.at_level(logging.DEBUG), app_client(redis_url=own_redis.url, redis_password="wr0ng-pw") as c:
        c.post("/predict", json=rows(2, start=9))
        assert c.get("/readyz").json()["cache_reason"] == "noauth"
    assert all("wr0ng-pw" not in r.getMessage() for r in caplog.records)


# --- WRONGTYPE: a miss, overwritten, never an outage ---------------------------------------------------


def http_key(prefix: str, version: str, row: dict[str, Any]) -> str:
    return f"{prefix}-http:{version[:16]}:{HTTP_ENCODING}:{row_digest(canonical_row(row))}"


@pytest.mark.parametrize("wrong", ["list", "hash"])
def test_a_wrong_typed_get_cache_key_is_a_miss_and_is_overwritten(own_redis: RedisServer, wrong: str) -> None:
    settings = make_settings(redis_url=own_redis.url)
    client = own_redis.client()
    with app_client(**settings.model_dump()) as c:
        key = http_key(settings.cache_prefix, c.app.state.service.model.version, ROW)
        client.rpush(key, "x") if wrong == "list" else client.hset(key, "x", "y")
        r = c.get("/predict", params=ROW)
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
        assert errors(c.app, "get", "wrongtype") == 1
        # Not an outage: Redis stays in use, /readyz says ok ...
        assert redis_up(c.app) == 1 and c.get("/readyz").json()["cache"] == "ok"
        # ... and the response's write-behind replaces the bad key.
        assert wait_until(lambda: client.type(key) == b"string", 10)
    with app_client(**settings.model_dump()) as fresh:
        again = fresh.get("/predict", params=ROW)
        assert again.headers["X-Cache"] == "HIT" and again.json() == r.json()


def test_a_wrong_typed_row_key_is_a_miss_and_is_overwritten(own_redis: RedisServer) -> None:
    settings = make_settings(redis_url=own_redis.url)
    client = own_redis.client()
    with app_client(**settings.model_dump()) as c:
        namespace = c.app.state.service.resolver.write_behind.namespace
        key = namespace + row_digest(canonical_row(ROW))
        client.rpush(key, "x")
        assert c.post("/predict", json=[ROW]).headers["X-Cache"] == "MISS"
        assert wait_until(lambda: client.type(key) == b"string", 10)
        assert redis_up(c.app) == 1 and c.get("/readyz").json()["cache"] == "ok"


def test_an_outage_is_still_an_outage(own_redis: RedisServer) -> None:
    with app_client(redis_url=own_redis.url, redis_timeout_ms=100) as c:
        own_redis.stop()
        time.sleep(0.05)
        c.post("/predict", json=rows(2, start=11))
        ready = c.get("/readyz").json()
        assert (ready["cache"], ready["cache_reason"]) == ("degraded", "unreachable")
        assert errors(c.app, "get", "unreachable") + errors(c.app, "ping", "unreachable") >= 1
