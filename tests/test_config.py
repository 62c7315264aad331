"""Settings: the Redis connection surface, and no credential in anything printed (issue 21, #9)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_settings
from harness import ROOT
from pydantic import ValidationError

from housing_api.config import Settings, describe_settings_error

PASSWORD = "hunter2-Zq9"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{PASSWORD}@redis:6379/0", "redis://***@redis:6379/0"),
        (f"rediss://housing-api:{PASSWORD}@redis:6380/0", "rediss://***@redis:6380/0"),
        (f"redis://redis:6379/0?password={PASSWORD}", "redis://redis:6379/0?***"),
        (f"redis//:{PASSWORD}@redis:6379/0", "***@redis:6379/0"),  # malformed: no "://"
        (f":{PASSWORD}@redis", "***@redis"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("localhost:6379", "localhost:6379"),
    ],
)
def test_a_printed_url_carries_no_credentials(url: str, shown: str) -> None:
    from housing_api.config import redact_url  # here: the module still runs against older checkouts

    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "env",
    [
        {"REDIS_URL": f"redis//:{PASSWORD}@redis:6379/0"},  # a missing colon: no scheme
        {"REDIS_URL": f"http://housing-api:{PASSWORD}@redis:6379/0"},
        {"REDIS_URL": f"redis://:{PASSWORD}@redis:sixthreeseven/0"},  # a port that is not a number
        {"REDIS_URL": f"redis://:{PASSWORD}@/0"},  # no host
    ],
    ids=["no-scheme", "wrong-scheme", "bad-port", "no-host"],
)
def test_a_malformed_redis_url_stops_startup_with_one_line_without_its_password(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "housing_api", "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", **env}, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("housing-api: cannot start: REDIS_URL=") and "***@" in lines[0]
    assert PASSWORD not in done.stderr + done.stdout


def test_a_refused_password_setting_is_never_echoed() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, redis_url=f"redis://:{PASSWORD}@redis/0", redis_password=PASSWORD)  # type: ignore[call-arg]
    assert PASSWORD not in describe_settings_error(caught.value)
    assert "set the Redis password once" in describe_settings_error(caught.value)


# --- one connection surface: where from the URL, who and how secret from their own settings ---------


def test_credentials_come_from_their_own_settings(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")  # as `kubectl create secret --from-file` often leaves it
    settings = make_settings(redis_url="redis://redis:6379/0", redis_username="housing-api", redis_password_file=secret)
    assert settings.redis_connection() == {"username": "housing-api", "password": PASSWORD}
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
    assert make_settings(redis_url="redis://redis/0", redis_password=PASSWORD).redis_connection() == {
        "password": PASSWORD
    }
    assert make_settings(redis_url="redis://redis/0").redis_connection() == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"redis_url": "redis://redis/0", "redis_password": "a", "redis_password_file": __file__}, "once"),
        ({"redis_url": "redis://redis/0", "redis_password_file": "/nonexistent/password"}, "not a readable file"),
        ({"redis_url": "redis://redis/0", "redis_ca_file": __file__}, "needs a rediss://"),
    ],
)
def test_conflicting_redis_settings_are_refused(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_settings(**overrides)


def test_the_startup_log_names_redis_without_its_password(caplog: pytest.LogCaptureFixture) -> None:
    from conftest import app_client, free_port

    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.DEBUG), app_client(redis_url=url) as c:
        assert c.get("/readyz").json()["cache"] == "degraded"
    assert any("Redis at redis://***@127.0.0.1" in r.getMessage() for r in caplog.records)
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)
