"""The manifests' Redis ACL against a real redis-server: the service's real operations work as the
least-privileged user, and nothing else does (issue 21 #10).

The ACL file is the dev overlay's (the Secret's users.acl; tests/helpers/k8s/ checks that the
rendered Secret carries it and that its password is the Secret's). The server loads it with
--aclfile, as the Redis container does; the service connects as REDIS_USERNAME with
REDIS_PASSWORD_FILE, as the API container does.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import RedisServer, app_client, wait_until
from fastapi import FastAPI

from housing_api.schemas import SAMPLE_BATCH

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / ".k8s" / "overlays" / "dev"
ACL = DEV / "redis-users.acl"
USER = "housing-api"
PASSWORD = re.search(r"password=(\S+)", (DEV / "kustomization.yaml").read_text())[1]  # type: ignore[index]


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, "--aclfile", str(ACL))
    server.spawn()
    as_user = redis.Redis(port=server.port, username=USER, password=PASSWORD, socket_timeout=0.5)

    def answers() -> bool:
        try:
            return bool(as_user.ping())
        except redis.ConnectionError:
            return False

    try:
        assert wait_until(answers, 10), server.output()
        yield server
    finally:
        as_user.close()
        server.stop()


def errors(app: FastAPI) -> dict[tuple[str, str], float]:
    families = [m for m in app.state.metrics.registry.collect() if m.name == "housing_api_redis_errors"]
    samples = [s for m in families for s in m.samples]
    return {(s.labels["op"], s.labels["reason"]): s.value for s in samples if s.name.endswith("_total") and s.value}


def test_the_service_runs_every_operation_as_the_acl_user(
    acl_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    settings = dict(
        redis_url=acl_redis.url, redis_username=USER, redis_password_file=secret,
        cache_prefix="housing",  # the manifests' prefix, which the ACL's key patterns name
        memory_cache_rows=0,  # every repeat goes to Redis, not the in-process tier
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="housing_api.cache"), app_client(**settings) as c:
        redis_tier = c.app.state.service.resolver.redis
        first = c.post("/predict", json=SAMPLE_BATCH)  # MGET, then EVALSHA/NOSCRIPT/SCRIPT LOAD/EVALSHA(SET)
        assert first.headers["X-Cache"] == "MISS"
        assert wait_until(lambda: c.post("/predict", json=SAMPLE_BATCH).headers["X-Cache"] == "HIT", 10)  # MGET hits
        assert c.get("/predict", params=SAMPLE_BATCH[1]).status_code == 200  # TTL + GET, then EVALSHA
        assert wait_until(lambda: c.get("/predict", params=SAMPLE_BATCH[1]).headers["X-Cache"] == "HIT", 10)
        assert c.portal.call(redis_tier.ping)  # type: ignore[union-attr]  # PING
        assert c.get("/readyz").json()["cache"] == "ok"
        assert errors(c.app) == {}
    assert not [r for r in caplog.records if "refuses scripts" in r.getMessage()]  # EVALSHA was allowed


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "maxmemory"),
        ("GET", "other:key"),
        ("SET", "other:key", "x"),
        ("EVAL", "return 1", "0"),
        ("SCRIPT", "FLUSH"),
        ("DEL", "housing:x"),
        ("ACL", "LIST"),
        ("REPLICAOF", "127.0.0.1", "1"),
    ],
)
def test_the_acl_user_can_do_nothing_else(acl_redis: RedisServer, command: tuple[str, ...]) -> None:
    client = redis.Redis(port=acl_redis.port, username=USER, password=PASSWORD)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)


def test_without_credentials_redis_answers_nothing_but_noauth(acl_redis: RedisServer) -> None:
    anonymous = redis.Redis(port=acl_redis.port)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.get("housing:x")


def test_a_key_prefix_the_acl_does_not_name_is_counted_as_noperm_not_an_outage(
    acl_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    with app_client(
        redis_url=acl_redis.url, redis_username=USER, redis_password_file=secret, cache_prefix="other"
    ) as c:
        assert c.post("/predict", json=SAMPLE_BATCH).status_code == 200
        assert wait_until(lambda: errors(c.app).get(("set", "noperm"), 0) >= 1, 10)
        assert errors(c.app).get(("get", "noperm"), 0) >= 1
        time.sleep(0.1)
        ready = c.get("/readyz").json()
        assert ready["cache"] == "ok" and not c.app.state.service.resolver.redis.degraded
        # A key the ACL refuses is not a refused script: the writes keep using EVALSHA.
        assert c.app.state.service.resolver.redis._scripting
    assert not [r for r in caplog.records if "refuses scripts" in r.getMessage()]
