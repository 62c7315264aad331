"""Prediction drift (drift.py) between two real apps sharing one real redis-server: what the canary
records is the true |A(row) - B(row)|, computed here with scikit-learn; rows the stable version never
saw, corrupt stable values and a dead Redis are counted, and cost no request anything."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_sync
from conftest import ROOT, RedisServer, app_client, make_settings, other_model, running_app
from helpers.two_versions import (
    assert_each_serves_its_own,
    assert_true_drift,
    drift_histogram,
    drift_rows,
    expected_histogram,
    idle,
    random_rows,
    stable_then_canary,
    stable_version,
)

from housing_api.app import create_app

pytestmark = pytest.mark.integration


def test_two_versions_on_one_redis_serve_their_own_answers_and_the_canary_records_their_true_drift(
    redis_url: str, tmp_path: Path
) -> None:
    pair = asyncio.run(stable_then_canary(tmp_path, seen=30, unseen=10, redis_url=redis_url))
    assert_true_drift(pair, compared=30, stable_missing=10)
    # The differences spread over several buckets: the bucket bounds are really tested.
    assert len(set(expected_histogram(pair.differences)[1])) > 3
    assert_each_serves_its_own(pair)
    assert min(pair.differences) > 1e-6  # the two models really disagree on every row


def canary_settings(tmp_path: Path, **overrides: object) -> dict[str, object]:
    return {"model_path": other_model(tmp_path)[0], "stable_model_version": stable_version(), "drift_sample": 1.0,
            "memory_cache_rows": 0, **overrides}  # fmt: skip


@pytest.mark.parametrize("corrupt", [b"not a float", b"nan", b"1e999", b"4.2 "])
def test_a_corrupt_stable_value_counts_invalid_and_is_not_observed(
    redis_url: str, tmp_path: Path, corrupt: bytes
) -> None:
    rows = random_rows(5, seed=7)
    prefix = make_settings().cache_prefix
    client = redis_sync.Redis.from_url(redis_url)
    with app_client(redis_url=redis_url, cache_prefix=prefix, memory_cache_rows=0) as stable:
        assert stable.post("/predict", json=rows).status_code == 200
    # The stable version's keys, found by their prefix alone, overwritten with values it never writes.
    keys = list(client.scan_iter(match=f"{prefix}:{stable_version()[:16]}:*"))
    assert len(keys) == 5
    for key in keys:
        client.set(key, corrupt)
    with app_client(redis_url=redis_url, cache_prefix=prefix, **canary_settings(tmp_path)) as canary:
        assert canary.post("/predict", json=rows).status_code == 200
        asyncio.run(idle_in_app(canary.app))
        assert drift_rows(canary.app) == {"compared": 0, "stable_missing": 0, "invalid": 5, "dropped": 0}
        assert drift_histogram(canary.app)[1][-1] == 0


async def idle_in_app(app: object) -> None:
    # The stage lives on the TestClient's loop; polling its queue and flag from another loop is safe.
    await idle(app.state.service.resolver.drift_stage)  # type: ignore[attr-defined]


def test_with_redis_down_every_request_is_answered_and_the_sampled_rows_are_dropped(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    settings = make_settings(redis_url=own_redis.url, redis_timeout_ms=50, **canary_settings(tmp_path))

    async def scenario() -> tuple[list[int], list[str], dict[str, float]]:
        app = create_app(settings)
        async with running_app(app) as client:
            own_redis.stop()
            answers = [await client.post("/predict", json=random_rows(3, seed=100 + i)) for i in range(10)]
            await idle(app.state.service.resolver.drift_stage)
        return [r.status_code for r in answers], [r.headers["X-Cache"] for r in answers], drift_rows(app)

    statuses, caches, rows = asyncio.run(scenario())
    assert statuses == [200] * 10 and caches == ["MISS"] * 10
    assert rows == {"compared": 0, "stable_missing": 0, "invalid": 0, "dropped": 30}


def test_a_full_drift_queue_drops_rows_and_counts_them(redis_url: str, tmp_path: Path) -> None:
    with app_client(redis_url=redis_url, **canary_settings(tmp_path)) as canary:
        canary.app.state.service.resolver.drift_stage.capacity = 0  # full from the start
        assert canary.post("/predict", json=random_rows(4, seed=3)).status_code == 200
        assert drift_rows(canary.app) == {"compared": 0, "stable_missing": 0, "invalid": 0, "dropped": 4}


def test_drift_sample_is_the_share_of_computed_rows_compared(redis_url: str, tmp_path: Path) -> None:
    with app_client(redis_url=redis_url, **canary_settings(tmp_path, drift_sample=0.25)) as canary:
        assert canary.post("/predict", json=random_rows(800, seed=11)).status_code == 200
        asyncio.run(idle_in_app(canary.app))
        sampled = sum(drift_rows(canary.app).values())
        # Binomial(800, 0.25): 200 +- 12 (one sd); the bounds are 5 sd away.
        assert 140 < sampled < 260, sampled
        # Cache hits are never sampled: the same rows again, all from Redis, add nothing.
        assert canary.post("/predict", json=random_rows(800, seed=11)).headers["X-Cache"] == "HIT"
        asyncio.run(idle_in_app(canary.app))
        assert sum(drift_rows(canary.app).values()) == sampled


@pytest.mark.parametrize(
    ("overrides", "active"),
    [
        ({}, True),
        ({"stable_model_version": ""}, False),
        ({"drift_sample": 0.0}, False),
        ({"redis_url": None}, False),
        ({"model_path": None}, False),  # the stable version itself: its own version is no canary
        ({"stable_model_version": "PREFIX16"}, True),
    ],
    ids=["canary", "no-stable-version", "sample-0", "no-redis", "stable-itself", "16-hex-prefix"],
)
def test_drift_runs_only_in_a_canary_with_redis_and_model_shows_its_configuration(
    redis_url: str, tmp_path: Path, overrides: dict[str, object], active: bool
) -> None:
    settings = {"redis_url": redis_url, **canary_settings(tmp_path), **overrides}
    if settings["model_path"] is None:
        del settings["model_path"]
    if settings["stable_model_version"] == "PREFIX16":
        settings["stable_model_version"] = stable_version()[:16]
    with app_client(**settings) as c:
        shown = c.get("/model").json()["drift"]
        stages = [stage.name for stage in c.app.state.service.resolver.stages]
    assert shown == {"stable_model_version": settings["stable_model_version"], "sample": settings["drift_sample"],
                     "active": active}  # fmt: skip
    assert ("drift" in stages) is active


def test_a_bad_stable_model_version_stops_startup_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "housing_api", "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", "STABLE_MODEL_VERSION": "models:/housing/7"}, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "housing-api: cannot start: STABLE_MODEL_VERSION=models:/housing/7: must be a model version digest "
        "as /model shows it: 16 to 64 lowercase hex characters"
    ]
