"""Sentinel mode against real redis-sentinel processes: a master, a replica, three sentinels.

The failover is real: the master process is killed (SIGKILL) under a steady load, the sentinels
agree it is down and promote the replica, and the service must not notice beyond its hit ratio:
every request a 200 with the model's answer, none past REQUEST_TIMEOUT_S, and the shared tier back
in use, as full as before (the replica had every row), without a restart.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import MODEL_PATH, ROOT, make_settings, running_app
from helpers.steady_load import SteadyLoad, distinct_rows
from helpers.two_versions import assert_each_serves_its_own, assert_true_drift, stable_then_canary

from housing_api.app import create_app
from housing_api.keys import canonical_row, rows_matrix
from housing_api.model import load_model
from housing_api_testing import harness

pytestmark = pytest.mark.integration
PASSWORD = "sentinel-and-redis-share-this"


def started_group(tmp: Path, password: str | None = None) -> harness.SentinelGroup:
    try:
        return harness.SentinelGroup(tmp, password=password).start()
    except harness.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def group(tmp_path: Path) -> Iterator[harness.SentinelGroup]:
    group = started_group(tmp_path)
    yield group
    group.stop()


def sentinel_settings(group: harness.SentinelGroup, **overrides: object) -> dict[str, object]:
    return {
        "redis_mode": "sentinel", "redis_url": group.url, "redis_sentinel_master": group.name,
        # Redis alone behind the model: every row not in Redis is the model's.
        "memory_cache_rows": 0, "redis_retry_interval_s": 0.2, **overrides,
    }  # fmt: skip


async def written(server: harness.RedisServer, keys: int, timeout_s: float = 10) -> None:
    """Until the write-behind has put `keys` keys on `server` (bounded: a busy machine is slow)."""
    deadline = time.monotonic() + timeout_s
    while await asyncio.to_thread(lambda: server.client().dbsize()) < keys:
        assert time.monotonic() < deadline, f"fewer than {keys} keys on the master after {timeout_s} s"
        await asyncio.sleep(0.05)


def test_rows_are_shared_through_the_master_the_sentinels_name(group: harness.SentinelGroup) -> None:
    async def scenario() -> list[str]:
        app = create_app(make_settings(**sentinel_settings(group)))
        async with running_app(app) as client:
            body = distinct_rows(4)
            first = await client.post("/predict", json=body)
            await written(group.master, 4)  # the rows, on the master the sentinels name
            second = await client.post("/predict", json=body)
            get = [await client.get("/predict", params=body[0]) for _ in range(2)]
            await written(group.master, 5)  # and the GET response
            return [first.headers["X-Cache"], second.headers["X-Cache"], *(r.status_code for r in get)]

    assert asyncio.run(scenario()) == ["MISS", "HIT", 200, 200]


# Exact drift counts need every sampled row read within the Redis tier's timeout: alone, not
# beside four parallel workers (one run at 4 workers counted rows off, 2026-12-02).
@pytest.mark.serial
def test_a_canary_reads_the_stable_versions_answers_from_the_master_for_its_drift(
    group: harness.SentinelGroup, tmp_path: Path
) -> None:
    pair = asyncio.run(stable_then_canary(tmp_path, seen=30, unseen=10, **sentinel_settings(group)))
    assert_true_drift(pair, compared=30, stable_missing=10)
    assert_each_serves_its_own(pair)
    assert pair.stable_again == pytest.approx(pair.expected_stable, rel=1e-12)


def test_sentinels_and_servers_take_the_one_password(tmp_path: Path) -> None:
    group = started_group(tmp_path, password=PASSWORD)
    try:

        async def scenario() -> str:
            settings = make_settings(**sentinel_settings(group, redis_password=PASSWORD))
            app = create_app(settings)
            async with running_app(app) as client:
                body = distinct_rows(3)
                await client.post("/predict", json=body)
                await written(group.master, 3)
                return (await client.post("/predict", json=body)).headers["X-Cache"]

        assert asyncio.run(scenario()) == "HIT"
    finally:
        group.stop()


def test_killing_the_master_under_load_fails_no_request_and_the_hit_ratio_recovers(
    group: harness.SentinelGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = distinct_rows(200)
    predictions = load_model(MODEL_PATH).predict(rows_matrix(map(canonical_row, rows))).tolist()
    expected = {row["MedInc"]: value for row, value in zip(rows, predictions, strict=True)}
    settings = make_settings(**sentinel_settings(group))

    async def scenario() -> tuple[SteadyLoad, float, float, float]:
        app = create_app(settings)
        async with running_app(app) as client:
            load = SteadyLoad(client, app, rows).start()
            await load.until(lambda: load.hit_ratio() > 0.97, 20, "the warm-up")
            before = load.hit_ratio()
            old_port, model_before = group.master.port, load.model_rows()
            group.master.signal(signal.SIGKILL)
            killed = time.monotonic()
            await load.until(lambda: group.master_port() != old_port, 20, "the sentinels' failover")
            promoted = time.monotonic() - killed
            degraded = promoted + await load.until(lambda: load.hit_ratio() >= before - 0.03, 20, "the hit ratio")
            await asyncio.sleep(0.5)
            await load.stop()
            return load, promoted, degraded, load.model_rows() - model_before

    load, promoted, degraded, model_rows = asyncio.run(scenario())
    assert set(load.statuses) == {200}, sorted(set(load.statuses))
    assert max(load.latencies) < settings.request_timeout_s
    assert all(answers == {expected[medinc]} for medinc, answers in load.answers.items())
    with capsys.disabled():
        print(
            f"\nsentinel failover: {len(load.statuses)} requests, all 200, "
            f"slowest {max(load.latencies) * 1000:.0f} ms; "
            f"replica promoted {promoted:.1f} s after the kill, hit ratio back {degraded:.1f} s after it; "
            f"{model_rows:.0f} rows from the model meanwhile"
        )


# Prod's ACL users (docs/deployment.md, "Redis credentials"): the API's, the replicas', the sentinels'.
ACL_PERMISSIONS = {
    "housing-api": "resetkeys ~housing:* ~housing-http:* resetchannels -@all +ping +get +mget +ttl +set +evalsha "
    "+script|load",
    "replica": "-@all +psync +replconf +ping",
    "sentinel": "allchannels -@all +multi +slaveof +ping +exec +subscribe +config|rewrite +role +publish +info "
    "+client|setname +client|kill +script|kill",
}


def test_the_documented_acl_users_replicate_fail_over_and_serve(tmp_path: Path) -> None:
    """The users.acl docs/deployment.md tells prod to create, and the sentinel configuration
    .k8s/components/redis-sentinel/configure.sh writes: replication and a failover work, and the
    API's restricted user reaches the new master through the sentinels."""
    docs = (ROOT / "docs" / "deployment.md").read_text()
    assert all(f"{user} on #%s {permissions}" in docs for user, permissions in ACL_PERMISSIONS.items())
    acl = "user default off\n" + "".join(f"user {u} on >{PASSWORD} {p}\n" for u, p in ACL_PERMISSIONS.items())
    try:
        group = harness.SentinelGroup(tmp_path, password=PASSWORD, acl=acl, username="housing-api").start()
    except harness.Unavailable as exc:
        pytest.skip(str(exc))
    settings = sentinel_settings(group, redis_username="housing-api", redis_password=PASSWORD, cache_prefix="housing")

    async def cached(client: httpx.AsyncClient, body: list[dict[str, float]]) -> bool:
        for _ in range(100):  # until the write-behind has landed (bounded)
            if (await client.post("/predict", json=body)).headers["X-Cache"] == "HIT":
                return True
            await asyncio.sleep(0.1)
        return False

    async def scenario() -> tuple[bool, bool]:
        async with running_app(create_app(make_settings(**settings))) as client:
            before = await cached(client, distinct_rows(3))
            old_port = group.master.port
            group.master.signal(signal.SIGKILL)
            for _ in range(200):
                if await asyncio.to_thread(group.master_port) != old_port:
                    break
                await asyncio.sleep(0.1)
            return before, await cached(client, distinct_rows(5)[3:])

    try:
        assert asyncio.run(scenario()) == (True, True)
    finally:
        group.stop()
