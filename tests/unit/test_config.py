"""Settings: the Redis connection surface, no credential in anything printed (issue 21, #9), and the
request deadline stated once (config.py), which the manifests and docs that restate it agree with."""

from __future__ import annotations

import logging
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import make_settings
from pydantic import ValidationError

from housing_api.config import REQUEST_TIMEOUT_S_DEFAULT, Settings, describe_settings_error
from housing_api.metrics import LATENCY_BUCKETS
from housing_api_testing.harness import ROOT

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
@pytest.mark.integration
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


@pytest.mark.integration
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
    ".k8s/components/flagger-canary/canary.yaml",
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


# --- every number the docs quote, against what sets it ----------------------------------------------
# Each fact: where its value comes from (a manifest, a Settings default, the code), and the ways the
# docs and manifest comments state it. A place that states it in another wording is not checked, so
# each pattern is tested below against the wording it must catch.
def _yaml(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text())


def _api_container() -> Any:
    return _yaml(".k8s/base/api-deployment.yaml")["spec"]["template"]["spec"]["containers"][0]


def _cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def sidecar_drain_s() -> float:
    annotations = _yaml(".k8s/overlays/prod/patch-api-deployment.yaml")["spec"]["template"]["metadata"]["annotations"]
    return float(yaml.safe_load(annotations["proxy.istio.io/config"])["terminationDrainDuration"].rstrip("s"))


def grace_period_s() -> float:
    return float(_yaml(".k8s/base/api-deployment.yaml")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def prestop_s() -> float:
    return float(_api_container()["lifecycle"]["preStop"]["exec"]["command"][-1])


def liveness_window_s() -> float:
    probe = _api_container()["livenessProbe"]
    return float(probe["periodSeconds"] * probe["failureThreshold"])


def hpa_target() -> float:
    (metric,) = _yaml(".k8s/base/api-hpa.yaml")["spec"]["metrics"]
    return float(metric["containerResource"]["target"]["averageUtilization"]) / 100


def graceful_drain_s() -> float:
    """What uvicorn gets to finish in-flight requests with the defaults (cli.graceful_timeout)."""
    from housing_api import cli
    from housing_api.app import RESOLVER_STOP_S

    args = cli.build_parser().parse_args(["serve"])
    return float(cli.graceful_timeout(args, Settings.model_fields["shutdown_timeout_s"].default, RESOLVER_STOP_S))


def default(name: str) -> float:
    return float(Settings.model_fields[name].default)


def setting(name: str) -> str:
    """How a setting is stated: `NAME=25` (the ConfigMap), "| `NAME` | `25` |" (the README's table),
    "(NAME, 25 s", "`NAME` 25 s" and "NAME (25 s)" (prose)."""
    return rf"(?:- {name}=|{name}`?(?:` \| `|,? | \())(\d+(?:\.\d+)?)"


DOCS = ("README.md", "docs/deployment.md", "docs/reliability.md", "docs/runbook.md", "docs/capacity.md")
MANIFESTS = (
    ".k8s/base/kustomization.yaml",
    ".k8s/base/api-deployment.yaml",
    ".k8s/base/api-hpa.yaml",
    ".k8s/overlays/prod/patch-api-deployment.yaml",
    ".k8s/components/flagger-canary/canary.yaml",
    "prometheus/alerts.yaml",
)
FACTS: dict[str, tuple[Any, tuple[str, ...]]] = {
    # name: (the value, as the source states it), (patterns that quote it)
    "terminationDrainDuration": (sidecar_drain_s, (r"terminationDrainDuration: (\d+)s", r"sidecar drains (\d+) s")),
    "terminationGracePeriodSeconds": (
        grace_period_s,
        (r"terminationGracePeriodSeconds`?:? `?(\d+)", r"grace period\s+\((\d+) s", r"fit the grace period \((\d+) s"),
    ),
    "preStop": (prestop_s, (r"preStop`?(?: hook)? sleeps (\d+) s", r"preStop (?:pause |sleep )?\(?(\d+) s")),
    "SHUTDOWN_TIMEOUT_S": (lambda: default("shutdown_timeout_s"), (setting("SHUTDOWN_TIMEOUT_S"),)),
    "in-flight drain": (graceful_drain_s, (r"in-flight requests within (\d+) s",)),
    "STAGE_DOWN_LIVEZ_S": (lambda: default("stage_down_livez_s"), (setting("STAGE_DOWN_LIVEZ_S"),)),
    "liveness restart": (
        lambda: default("stage_down_livez_s") + liveness_window_s(),
        (r"about (\d+) s after\s+the stage went down", r"restarts? the pod about (\d+) s"),
    ),
    "CPU limit": (lambda: _cores(_api_container()["resources"]["limits"]["cpu"]), (r"(\d+)-(?:CPU|core) limit",)),
    "HPA scale-out point (millicores)": (
        lambda: hpa_target() * _cores(_api_container()["resources"]["requests"]["cpu"]) * 1000,
        (r"scales?[- ]out at (?:about |~)?(\d+)m",),
    ),
}
# Where a pattern would catch a number that is not the fact (a test's own setting, a past experiment).
NOT_STATEMENTS = {
    ("docs/reliability.md", "CPU limit"),  # "CPU limit: measured" recounts the 1-core experiment
}


def stated(fact: str, text: str) -> list[float]:
    return [float(v) for pattern in FACTS[fact][1] for v in re.findall(pattern, text)]


@pytest.mark.parametrize("fact", FACTS)
def test_every_number_the_docs_quote_is_the_one_in_force(fact: str) -> None:
    value = FACTS[fact][0]()
    found = {}
    for place in (*DOCS, *MANIFESTS):
        if (place, fact) not in NOT_STATEMENTS and (numbers := stated(fact, (ROOT / place).read_text())):
            found[place] = numbers
    assert found, f"nothing states {fact} any more: drop it from FACTS or fix its pattern"
    wrong = {place: numbers for place, numbers in found.items() if set(numbers) != {value}}
    assert not wrong, f"{fact} is {value:g}, but {wrong}"


@pytest.mark.parametrize(
    ("fact", "text", "number"),
    [
        ("terminationDrainDuration", "The API pods set `terminationDrainDuration: 30s`, so", 30),
        ("terminationDrainDuration", "<= `terminationGracePeriodSeconds` 40 s, the Istio sidecar drains 30 s |", 30),
        ("terminationGracePeriodSeconds", "`terminationGracePeriodSeconds: 45` covers both", 45),
        ("terminationGracePeriodSeconds", "within the grace period\n  (45 s; see below)", 45),
        ("preStop", "while the `preStop` hook sleeps 5 s, so", 5),
        ("preStop", "cut the preStop pause (5 s) and", 5),
        ("SHUTDOWN_TIMEOUT_S", "| `SHUTDOWN_TIMEOUT_S` | `30` | hard bound", 30),
        ("SHUTDOWN_TIMEOUT_S", "the app's shutdown (SHUTDOWN_TIMEOUT_S, 30 s) short", 30),
        ("SHUTDOWN_TIMEOUT_S", "drains within SHUTDOWN_TIMEOUT_S (30 s).", 30),
        ("in-flight drain", "stops accepting connections and finishes in-flight requests within 20 s.", 20),
        ("STAGE_DOWN_LIVEZ_S", "should have failed after STAGE_DOWN_LIVEZ_S (60 s) so", 60),
        ("liveness restart", "restarts it, about 90 s after\n   the stage went down", 90),
        ("CPU limit", "throttled by the 1-CPU limit; one thread", 1),
        ("HPA scale-out point (millicores)", "Of the 500m request: scale out at ~420m", 420),
    ],
)
def test_each_pattern_catches_a_number_that_drifted(fact: str, text: str, number: float) -> None:
    assert stated(fact, text) == [number]


def test_a_stuck_stage_restarts_its_pod_before_its_alert_fires() -> None:
    # /livez fails after STAGE_DOWN_LIVEZ_S, the kubelet restarts after the liveness window: both before
    # HousingApiStageDown's `for` (5 minutes), and far above a supervisor's routine restart (50 ms).
    from housing_api.stages import RESTART_DELAY_S

    rules = yaml.safe_load((ROOT / "prometheus" / "alerts.yaml").read_text())
    (stage_down,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "HousingApiStageDown"]
    assert default("stage_down_livez_s") + liveness_window_s() < int(stage_down["for"].rstrip("m")) * 60
    assert default("stage_down_livez_s") >= 100 * RESTART_DELAY_S
    config = _yaml(".k8s/base/kustomization.yaml")["configMapGenerator"][0]["literals"]
    assert f"STAGE_DOWN_LIVEZ_S={default('stage_down_livez_s'):g}" in config


# --- capacity: docs/capacity.md's table follows from its measurements and the manifests ------------
CAPACITY = ROOT / "docs" / "capacity.md"


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def measured_capacity() -> tuple[float, float]:
    """(hits, misses) per second of one pod at its CPU request, from the measurement table."""
    text = CAPACITY.read_text()
    hits = re.search(r"\| cache hits \| [\d.]+ ms \| \*\*([\d,]+) req/s\*\*", text)
    misses = re.search(r"\| cache misses \| [\d.]+ ms \| \*\*([\d,]+) req/s\*\*", text)
    assert hits and misses
    return _number(hits[1]), _number(misses[1])


def test_the_capacity_tables_pods_follow_from_the_measurement_and_the_hpa_target() -> None:
    hits, misses = measured_capacity()
    rows = re.findall(r"^\| ([\d,]+) req/s \| ([\d.]+) \| ([\d,]+) req/s \| ([\d,]+) \|", CAPACITY.read_text(), re.M)
    assert len(rows) == 9
    for load, rate, per_pod, pods in rows:
        c = float(rate)
        assert abs(_number(per_pod) - 1 / (c / hits + (1 - c) / misses)) < 1, (load, rate)
        needed = _number(load) / (hpa_target() * _number(per_pod))
        assert abs(_number(pods) - math.ceil(needed)) <= 1, (load, rate, pods)  # rounded up, from unrounded inputs


def test_the_hpa_bounds_quoted_are_prods() -> None:
    _, misses = measured_capacity()
    max_replicas = _yaml(".k8s/overlays/prod/patch-hpa.yaml")["spec"]["maxReplicas"]
    times = "\N{MULTIPLICATION SIGN}"
    quoted = re.search(rf"`(\d+) {times} ([\d.]+) {times} (\d+)` = \*\*([\d,]+) req/s\*\*", CAPACITY.read_text())
    assert quoted, "docs/capacity.md no longer quotes prod's maxReplicas x target x capacity"
    assert (int(quoted[1]), float(quoted[2]), float(quoted[3])) == (max_replicas, hpa_target(), misses)
    assert abs(_number(quoted[4]) - max_replicas * hpa_target() * misses) < 50


def test_per_core_figures_are_the_capacity_measurements() -> None:
    # reliability.md once said "about 1,250 requests/s per core" (an older harness) beside
    # capacity.md's 410 / 258 req/s at 500m: every per-core figure must now be capacity.md's, doubled.
    hits, misses = measured_capacity()
    cores = 1 / _cores(_api_container()["resources"]["requests"]["cpu"])
    for place in DOCS:
        text = (ROOT / place).read_text()
        assert not re.search(r"requests/s per core", text), place
        for number, kind in re.findall(r"([\d,]+) (hits|misses)/s(?: or [\d,]+ misses/s)? per core", text):
            assert abs(_number(number) - cores * (hits if kind == "hits" else misses)) <= 1, (place, number)
        for number in re.findall(r"or ([\d,]+)\s+misses/s per core", text):
            assert abs(_number(number) - cores * misses) <= 1, (place, number)


@pytest.mark.parametrize("value", ["A0DD6C52D36400665DECEFB220C8D265", "a0dd6c52", "models:/housing/7", "x" * 64])
def test_a_stable_model_version_that_is_no_digest_is_refused_with_a_clear_message(value: str) -> None:
    with pytest.raises(ValidationError, match="16 to 64 lowercase hex characters"):
        make_settings(stable_model_version=value)
