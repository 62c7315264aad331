"""redis_faults.py: which reason label a failed Redis call gets, and the burst-limited log."""

from __future__ import annotations

import logging

import pytest
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

from housing_api import redis_faults
from housing_api.redis_faults import BurstLog, classify


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (TimeoutError(), "timeout"),
        (RedisTimeoutError(), "timeout"),
        (AuthenticationError("WRONGPASS"), "noauth"),  # a ConnectionError too: checked first
        (RedisConnectionError("refused"), "unreachable"),
        (BusyLoadingError("LOADING"), "unreachable"),
        (ConnectionResetError(), "unreachable"),
        (ReadOnlyError("READONLY"), "readonly"),
        (OutOfMemoryError("OOM command not allowed"), "oom"),
        (NoPermissionError("NOPERM"), "noperm"),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), "wrongtype"),
        (ResponseError("Error running script: @user_script:1: -READONLY You can't write"), "readonly"),
        (ResponseError("ERR Error running script: OOM command not allowed"), "oom"),
        (ResponseError("ERR unknown command"), "reply"),
        (ValueError("anything else"), "reply"),
    ],
)
def test_each_failure_gets_its_reason(exc: BaseException, reason: str) -> None:
    assert classify(exc) == reason
    assert reason in redis_faults.REASONS


def test_a_burst_is_logged_once_then_with_how_many_were_not(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(redis_faults.time, "monotonic", lambda: now[0])
    burst = BurstLog(logging.getLogger("test.burst"), every_s=10.0)
    with caplog.at_level(logging.WARNING, "test.burst"):
        for _ in range(3):
            burst.warning("timeout", "Redis %s", "timed out")
        burst.warning("oom", "Redis full")  # another reason has its own window
        now[0] += 10.0
        burst.warning("timeout", "Redis %s", "timed out")
    assert caplog.messages == ["Redis timed out", "Redis full", "Redis timed out (2 more since the last report)"]
