"""Settings: the Redis connection surface, no credential in anything printed (issue 21, #9), and the
request deadline stated once (config.py), which the manifests and docs that restate it agree with."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_settings
from harness import ROOT
from pydantic import ValidationError

from housing_api.config import REQUEST_TIMEOUT_S_DEFAULT, Settings, describe_settings_error
from housing_api.metrics import LATENCY_BUCKETS

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


@pytest.mark.parametrize(
    ("env", "nodes"),
    [
        ({"REDIS_URL": "redis://redis:6380/2"}, [("redis", 6380)]),
        (
            {"REDIS_MODE": "sentinel", "REDIS_URL": "redis://s0,s1:26380,s2/0", "REDIS_SENTINEL_MASTER": "housing"},
            [("s0", 26379), ("s1", 26380), ("s2", 26379)],
        ),
        ({"REDIS_MODE": "cluster", "REDIS_URL": "rediss://r0:7000,r1:7001"}, [("r0", 7000), ("r1", 7001)]),
        ({"REDIS_MODE": "cluster", "REDIS_URL": "redis://r0/0"}, [("r0", 6379)]),
    ],
    ids=["standalone", "sentinel", "cluster-tls", "cluster-one-seed"],
)
def test_each_mode_reads_its_hosts_from_the_one_url(
    env: dict[str, str], nodes: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings(_env_file=None).redis_nodes() == nodes  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"redis_url": "redis://r0,r1/0"}, "names several hosts: set REDIS_MODE=sentinel or REDIS_MODE=cluster"),
        ({"redis_mode": "sentinel", "redis_url": "redis://s0/0"}, "REDIS_MODE=sentinel needs REDIS_SENTINEL_MASTER"),
        ({"redis_mode": "sentinel", "redis_sentinel_master": "m"}, "REDIS_MODE=sentinel needs REDIS_URL"),
        ({"redis_mode": "cluster", "redis_url": "redis://r0,r1/3"}, "has database 0 only"),
        ({"redis_mode": "cluster", "redis_url": "unix:///run/redis.sock"}, "needs a redis:// or rediss://"),
        ({"redis_url": "redis://r0/0", "redis_sentinel_master": "m"}, "for REDIS_MODE=sentinel only"),
        ({"redis_mode": "replicated", "redis_url": "redis://r0/0"}, "'standalone', 'sentinel' or 'cluster'"),
    ],
    ids=[
        "hosts-without-mode",
        "sentinel-without-master",
        "sentinel-without-url",
        "cluster-database",
        "cluster-unix",
        "master-without-sentinel",
        "unknown-mode",
    ],
)
def test_a_redis_shape_that_does_not_fit_its_mode_is_refused_in_one_line(
    overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(**overrides)
    line = describe_settings_error(refused.value)
    assert message in line and "\n" not in line, line


def test_a_redis_shape_that_does_not_fit_stops_startup_with_one_line() -> None:
    env = {"REDIS_MODE": "sentinel", "REDIS_URL": f"redis://:{PASSWORD}@s0,s1,s2/0"}
    done = subprocess.run(
        [sys.executable, "-m", "housing_api", "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", **env}, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip() == (
        "housing-api: cannot start: REDIS_MODE=sentinel needs REDIS_SENTINEL_MASTER "
        "(the master name the sentinels monitor)"
    ), done.stderr


def test_the_startup_log_names_redis_without_its_password(caplog: pytest.LogCaptureFixture) -> None:
    from conftest import app_client, free_port

    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.DEBUG), app_client(redis_url=url) as c:
        assert c.get("/readyz").json()["cache"] == "degraded"
    assert any("Redis at redis://***@127.0.0.1" in r.getMessage() for r in caplog.records)
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)


# --- the request deadline, stated once ----------------------------------------------------------
# The ways a manifest or a doc states the deadline: `REQUEST_TIMEOUT_S=5` (the ConfigMap),
# "| `REQUEST_TIMEOUT_S` | `5` |" (the README's settings table) and "(REQUEST_TIMEOUT_S, 5 s" (prose).
STATED = re.compile(r"REQUEST_TIMEOUT_S(?:=|` \| `|`?, )(\d+(?:\.\d+)?)")
PLACES = (
    "README.md",
    "docs/deployment.md",
    ".k8s/base/kustomization.yaml",
    ".k8s/overlays/prod/istio-virtualservice.yaml",
)


def stated_deadlines(text: str) -> list[float]:
    return [float(value) for value in STATED.findall(text)]


def test_the_settings_default_is_the_declared_deadline() -> None:
    assert Settings.model_fields["request_timeout_s"].default == REQUEST_TIMEOUT_S_DEFAULT
    assert LATENCY_BUCKETS[-1] == REQUEST_TIMEOUT_S_DEFAULT  # a p99 at the deadline reads as such


@pytest.mark.parametrize("place", PLACES)
def test_every_manifest_and_doc_that_states_the_deadline_states_the_default(place: str) -> None:
    stated = stated_deadlines((ROOT / place).read_text())
    assert stated, f"{place} no longer states REQUEST_TIMEOUT_S: drop it from PLACES or fix the pattern"
    assert set(stated) == {REQUEST_TIMEOUT_S_DEFAULT}, (
        f"{place} states {stated}, config.py {REQUEST_TIMEOUT_S_DEFAULT:g}"
    )


@pytest.mark.parametrize(
    "text",
    [
        "- REQUEST_TIMEOUT_S=7",
        "| `REQUEST_TIMEOUT_S` | `7` | longest",
        "(`REQUEST_TIMEOUT_S`, 7 s, answered",
        "(REQUEST_TIMEOUT_S, 7 s)",
    ],
)
def test_the_check_sees_a_restated_deadline_that_drifted(text: str) -> None:
    assert stated_deadlines(text) == [7.0] != [REQUEST_TIMEOUT_S_DEFAULT]
