"""The dashboard against a real Prometheus scraping a real `housing-api serve` every second.

Traffic with cache hits in every tier, misses, model calls and a 422 is sent; then every query of
every panel is evaluated through Prometheus's HTTP API, exactly as Grafana would send it (with its
variables substituted). Each service query must return series with the expected labels; each
Kubernetes-only query (prom.K8S_ONLY_METRICS) must parse. Every exported metric must be scraped
with its labels, so renaming or dropping one fails here even if no panel reads it.
"""

from __future__ import annotations

import asyncio
import math
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RedisServer, Server

from housing_api import __version__
from housing_api.schemas import SAMPLE_BATCH
from housing_api_testing import harness
from housing_api_testing.prom import (
    AWAITED,
    AWAITED_LABELS,
    JOB,
    PROMETHEUS_INSTALL,
    REDIS_JOB,
    TEST_VARIABLES,
    Prometheus,
    PrometheusUnavailable,
    exported_series,
    is_k8s_only,
    load_dashboard,
    metric_names,
    prometheus_binary,
    promql_on_series,
    promtool_binary,
    queries,
    render,
)

# serial: rates and ratios over a short window, an overload: parallel workers on the same cores would skew it
# (the Makefile's test target).
pytestmark = [pytest.mark.integration, pytest.mark.serial]

Labels = frozenset[str]
ANY: dict[str, set[str]] = {}

# Per (panel title, refId): the label names every result series has, and label values that must
# be among the results. Kubernetes-only queries are not listed: they only have to parse.
EXPECTED: dict[tuple[str, str], tuple[Labels, dict[str, set[str]]]] = {
    ("Requests per second by status class", "A"): (frozenset({"status"}), {"status": {"2xx", "4xx"}}),
    **{("Latency of /predict, 2xx answers (SLO: p99 < 50 ms)", ref): (frozenset(), ANY) for ref in "ABCD"},
    ("Error ratio of /predict (SLO: 5xx < 0.1 %)", "A"): (frozenset(), ANY),
    ("Error ratio of /predict (SLO: 5xx < 0.1 %)", "B"): (frozenset(), ANY),
    # One series per pod; on loopback a pod is an `instance` (Kubernetes adds `pod`).
    ("Requests in flight per pod (limit 128)", "A"): (frozenset({"instance"}), ANY),
    ("Requests in flight per pod (limit 128)", "B"): (
        frozenset({"method", "handler"}),
        {"handler": {"/predict", "/readyz"}, "method": {"GET", "POST"}},
    ),
    ("p99 latency by route and status class", "A"): (
        frozenset({"method", "handler", "status"}),
        {"handler": {"/predict", "/readyz"}, "status": {"2xx", "4xx"}},
    ),
    ("Request and response size of /predict", "A"): (frozenset(), ANY),
    ("Request and response size of /predict", "B"): (frozenset(), ANY),
    ("Cache hit ratio per tier", "A"): (frozenset({"tier"}), {"tier": {"http", "memory", "redis"}}),
    # One version here (the committed model's), by its 12-hex model_version.
    ("Requests per second by model version", "A"): (frozenset({"model_version"}), ANY),
    ("5xx ratio of /predict by model version", "A"): (frozenset({"model_version"}), ANY),
    ("p99 of /predict by model version (2xx)", "A"): (frozenset({"model_version"}), ANY),
    ("Cache hit ratio by model version and tier", "A"): (
        frozenset({"model_version", "tier"}),
        {"tier": {"http", "memory", "redis"}},
    ),
    # Only a canary with a stable version to compare with has drift: the rollout test answers these
    # (ROLLOUT_ONLY below); here they only have to parse.
    **{("Prediction drift against the stable version", ref): (frozenset({"model_version"}), ANY) for ref in "AB"},
    ("Drift comparisons by outcome", "A"): (frozenset({"model_version", "outcome"}), ANY),
    ("Rows per second by source", "A"): (frozenset({"source"}), {"source": {"http", "memory", "redis", "model"}}),
    ("Model inference duration (p50, p99)", "A"): (frozenset(), ANY),
    ("Model inference duration (p50, p99)", "B"): (frozenset(), ANY),
    ("Rows per model call", "A"): (frozenset(), ANY),
    ("Rows per model call", "B"): (frozenset(), ANY),
    ("Queue depth per pod (limit 20,000 rows)", "A"): (frozenset({"instance"}), ANY),
    ("Queue depth per pod (limit 20,000 rows)", "B"): (frozenset({"instance"}), ANY),
    ("Rejected requests (429) by reason", "A"): (
        frozenset({"reason"}),
        {"reason": {"inflight_full", "queue_full"}},
    ),
    ("Redis errors and dropped writes per second", "A"): (
        frozenset({"op", "reason"}),
        {"op": {"ping", "get", "set"}, "reason": {"unreachable", "readonly", "oom", "noauth", "wrongtype"}},
    ),
    ("Redis errors and dropped writes per second", "B"): (frozenset(), ANY),
    ("Pods serving without Redis", "A"): (frozenset(), ANY),
    ("Pods per model version", "A"): (frozenset({"version"}), ANY),
    ("Pods per build", "A"): (frozenset({"version"}), {"version": {__version__}}),
    ("GC pause p99 by generation", "A"): (frozenset({"generation"}), {"generation": {"0"}}),
    ("GC collections per second by generation", "A"): (frozenset({"generation"}), {"generation": {"0", "1", "2"}}),
    ("Process CPU per pod", "A"): (frozenset({"instance"}), ANY),
    ("Latency: gateway and app (p99)", "B"): (frozenset(), ANY),
    # The Redis row: Debian's prometheus-redis-exporter on the stack's Redis (one server: an instance).
    **{("Redis memory against maxmemory", ref): (frozenset({"instance"}), ANY) for ref in "AB"},
    **{("Redis evictions and expirations per second", ref): (frozenset({"instance"}), ANY) for ref in "AB"},
    ("Redis keyspace hit ratio", "A"): (frozenset({"instance"}), ANY),
    ("Redis connected clients", "A"): (frozenset({"instance"}), ANY),
    ("Redis roles and replicas", "A"): (frozenset({"role"}), {"role": {"master"}}),
    ("Redis roles and replicas", "B"): (frozenset({"instance"}), ANY),
}

ROUNDS = 4
OTHER_ROWS = [{**SAMPLE_BATCH[0], "MedInc": 1 + i / 100} for i in range(40)]
# The in-process tier holds fewer rows than one round asks for, so a row evicted from it comes
# back from Redis in the next round: every tier gets hits and misses.
SERVER_ENV = {
    "MEMORY_CACHE_ROWS": "16",
    # One OpenMP thread, as in a pod: inference otherwise spins on cores Prometheus and pytest share.
    "OMP_NUM_THREADS": "1",
}


def _round(client: httpx.Client, r: int) -> tuple[int, int]:
    """One round of traffic; returns (/predict requests sent, rows answered)."""
    for _ in range(3):
        assert client.post("/predict", json=SAMPLE_BATCH).status_code == 200  # memory hits after the first
    assert client.post("/predict", json=OTHER_ROWS).status_code == 200  # redis hits from round 1
    assert client.post("/predict", json=[{**SAMPLE_BATCH[0], "MedInc": 9 + r / 10}]).status_code == 200  # model
    assert client.post("/predict", json=[{**SAMPLE_BATCH[0], "MedInc": -1}]).status_code == 422
    for _ in range(2):
        assert client.get("/predict", params=SAMPLE_BATCH[1]).status_code == 200  # http tier
    return 8, 3 * len(SAMPLE_BATCH) + len(OTHER_ROWS) + 1 + 2


class Stack:
    """Redis, the service and Prometheus, and what was sent."""

    def __init__(self, prometheus: Prometheus, server: Server, multiproc_dir: Path) -> None:
        self.prometheus = prometheus
        self.server = server
        self.multiproc_dir = multiproc_dir
        self.requests = 0
        self.rows = 0

    def send_traffic(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            for r in range(ROUNDS):
                requests, rows = _round(client, r)
                self.requests += requests
                self.rows += rows
                # Spread over several scrapes, so every counter has increased inside a rate window.
                if r < ROUNDS - 1:
                    time.sleep(1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    try:
        binary = prometheus_binary()
    except PrometheusUnavailable as exc:
        pytest.skip(str(exc))
    tmp: Path = tmp_path_factory.mktemp("prometheus")
    # Left over from some other tool: `serve` must ignore it (one worker, nothing multiprocess).
    multiproc = tmp / "multiproc"
    multiproc.mkdir()
    redis = RedisServer(tmp, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru").start()
    try:
        exporter = harness.RedisExporter(redis).start()
    except harness.Unavailable as exc:
        redis.stop()
        pytest.skip(str(exc))
    env = {"REDIS_URL": redis.url, "CACHE_PREFIX": "prom", "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    server = Server({**env, **SERVER_ENV})
    redis_job = {REDIS_JOB: [f"127.0.0.1:{exporter.port}"]}
    prometheus = Prometheus(binary, tmp, [f"127.0.0.1:{server.port}"], other_jobs=redis_job)
    try:
        prometheus.start()  # while the service loads its model
        server.wait_ready()
        assert prometheus.wait_for_targets(), "Prometheus cannot scrape the service"
        stack = Stack(prometheus, server, multiproc)
        stack.send_traffic()
        caught_up = prometheus.wait_for_value(
            f'sum(http_requests_total{{job="{JOB}", handler="/predict"}})', stack.requests
        ) and prometheus.wait_for_value(f'sum(housing_api_rows_served_total{{job="{JOB}"}})', stack.rows)
        assert caught_up, "Prometheus never scraped the traffic that was sent"
        yield stack
    finally:
        prometheus.stop()
        if server.proc.poll() is None:
            server.stop()
        exporter.stop()
        redis.stop()


ROLLOUT_ONLY = {
    ("Prediction drift against the stable version", "A"),
    ("Prediction drift against the stable version", "B"),
    ("Drift comparisons by outcome", "A"),
}


def awaited(expr: str) -> bool:
    """Whether a query reads a series or a label that the service does not export yet (prom.AWAITED)."""
    labels = {label for _, label in AWAITED_LABELS}
    return bool(metric_names(expr) & set(AWAITED)) or any(label in expr for label in labels)


def _dashboard_queries() -> list[tuple[str, str, str]]:
    return [(panel["title"], target["refId"], target["expr"]) for panel, target in queries(load_dashboard())]


SERVICE_QUERIES = [q for q in _dashboard_queries() if not is_k8s_only(q[2])]
K8S_QUERIES = [q for q in _dashboard_queries() if is_k8s_only(q[2])]


def _ids(q: tuple[str, str, str]) -> str:
    return f"{q[0]}/{q[1]}"


def test_without_prometheus_and_root_the_skip_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from housing_api_testing import prom

    monkeypatch.setattr(prom.shutil, "which", lambda name: None)
    monkeypatch.setattr(prom.os, "geteuid", lambda: 1000)
    with pytest.raises(PrometheusUnavailable, match=re.escape(PROMETHEUS_INSTALL)):
        prometheus_binary()


def test_every_service_query_has_an_expectation_and_every_expectation_a_query() -> None:
    assert {(title, ref) for title, ref, _ in SERVICE_QUERIES} == set(EXPECTED)
    assert K8S_QUERIES, "the Kubernetes panels are gone"


@pytest.mark.parametrize("query", SERVICE_QUERIES, ids=_ids)
def test_service_query_returns_the_expected_series(stack: Stack, query: tuple[str, str, str]) -> None:
    title, ref, expr = query
    labels, values = EXPECTED[(title, ref)]
    if awaited(expr):
        pytest.skip("reads what issue 25's service side adds (prom.AWAITED); runs in full once it lands")
    result = stack.prometheus.query(render(expr))
    if (title, ref) in ROLLOUT_ONLY:
        return  # parsed (query raises otherwise); a single service has no drift to show
    assert result, f"no data for {render(expr)}"
    assert all(set(series["metric"]) == labels for series in result), result
    # A route nobody called inside the window is NaN (0/0); the traffic makes the rest numbers.
    assert any(math.isfinite(float(series["value"][1])) for series in result), result
    for label, wanted in values.items():
        assert wanted <= {s["metric"][label] for s in result}, (label, result)


@pytest.mark.parametrize("query", K8S_QUERIES, ids=_ids)
def test_kubernetes_only_query_parses(stack: Stack, query: tuple[str, str, str]) -> None:
    stack.prometheus.query(render(query[2]))  # raises on a parse error; no data outside Kubernetes


@pytest.mark.parametrize(("name", "labels"), sorted(exported_series().items()), ids=sorted(exported_series()))
def test_every_exported_metric_is_scraped_with_its_labels(stack: Stack, name: str, labels: Labels) -> None:
    result = stack.prometheus.query(f'{name}{{job="{JOB}"}}')
    assert result, f"{name} is not scraped"
    for series in result:
        assert set(series["metric"]) - {"__name__", "job", "instance"} == labels, series


def test_one_worker_per_process_so_the_counts_add_up_to_what_was_sent(stack: Stack) -> None:
    # What the fixture waited for, asserted: a second worker would report only its share.
    p = stack.prometheus
    assert p.value(f'sum(http_requests_total{{job="{JOB}", handler="/predict"}})') == stack.requests
    assert p.value(f'sum(http_requests_total{{job="{JOB}", handler="/predict", status="4xx"}})') == ROUNDS
    assert p.value(f'sum(housing_api_rows_served_total{{job="{JOB}"}})') == stack.rows
    assert not any(stack.multiproc_dir.iterdir()), "the service wrote multiprocess metric files"


def test_the_redis_tier_really_was_used(stack: Stack) -> None:
    p = stack.prometheus
    assert (p.value(f'housing_api_cache_lookups_total{{job="{JOB}", tier="redis", outcome="hit"}}') or 0) > 0
    assert p.value(f'housing_api_redis_up{{job="{JOB}"}}') == 1


# --- per-pod limits: Prometheus's engine on synthetic series of three pods -------------------------
# Pod a sits at its limit while b and c are nearly idle: a per-pod panel must draw a at the limit
# (a sum over pods would draw one line above it, and a fleet average one far below it).
def _pod(metric: str, pod: str, **labels: str) -> str:
    extra = "".join(f', {k}="{v}"' for k, v in labels.items())
    where = f'job="housing-api", namespace="prod", pod="housing-api-{pod}", instance="10.0.0.{ord(pod)}:8000"'
    return f"{metric}{{{where}{extra}}}"


def _cadvisor(metric: str, pod: str, container: str = "api") -> str:
    return f'{metric}{{namespace="prod", pod="housing-api-{pod}", container="{container}"}}'


def _at(pod: str) -> str:
    return f'{{pod="housing-api-{pod}", instance="10.0.0.{ord(pod)}:8000"}}'


PER_POD: dict[tuple[str, str], tuple[dict[str, str], list[tuple[str, float]]]] = {
    ("Requests in flight per pod (limit 128)", "A"): (
        {_pod("housing_api_inflight_requests", p): v for p, v in [("a", "128x10"), ("b", "3x10"), ("c", "0x10")]},
        [(_at("a"), 128), (_at("b"), 3), (_at("c"), 0)],
    ),
    ("Requests in flight per pod (limit 128)", "B"): (
        {
            _pod("http_requests_inprogress", "a", handler="/predict", method="POST"): "128x10",
            _pod("http_requests_inprogress", "b", handler="/predict", method="POST"): "3x10",
        },
        [('{handler="/predict", method="POST"}', 128)],
    ),
    ("Queue depth per pod (limit 20,000 rows)", "A"): (
        {
            _pod("housing_api_queue_rows", "a", stage="redis"): "15000x10",
            _pod("housing_api_queue_rows", "a", stage="model"): "5000x10",
            _pod("housing_api_queue_rows", "a", stage="redis_write"): "7x10",
            _pod("housing_api_queue_rows", "b", stage="redis"): "10x10",
            _pod("housing_api_queue_rows", "b", stage="model"): "0x10",
        },
        [(_at("a"), 20000), (_at("b"), 10)],
    ),
    ("Queue depth per pod (limit 20,000 rows)", "B"): (
        {
            _pod("housing_api_queue_rows", "a", stage="redis_write"): "20000x10",
            _pod("housing_api_queue_rows", "a", stage="redis"): "5x10",
            _pod("housing_api_queue_rows", "b", stage="redis_write"): "0x10",
        },
        [(_at("a"), 20000), (_at("b"), 0)],
    ),
    ("Process CPU per pod", "A"): (
        {_pod("process_cpu_seconds_total", "a"): "0+60x10", _pod("process_cpu_seconds_total", "b"): "0+30x10"},
        [(_at("a"), 1), (_at("b"), 0.5)],
    ),
    ("CPU per pod", "A"): (
        {
            _cadvisor("container_cpu_usage_seconds_total", "a"): "0+60x10",
            _cadvisor("container_cpu_usage_seconds_total", "a", "istio-proxy"): "0+60x10",
            _cadvisor("container_cpu_usage_seconds_total", "b"): "0+30x10",
        },
        [('{pod="housing-api-a"}', 1), ('{pod="housing-api-b"}', 0.5)],
    ),
    ("Memory per pod", "A"): (
        {
            _cadvisor("container_memory_working_set_bytes", "a"): "1073741824x10",
            _cadvisor("container_memory_working_set_bytes", "b"): "1048576x10",
        },
        [('{pod="housing-api-a"}', 1073741824), ('{pod="housing-api-b"}', 1048576)],
    ),
    ("CPU throttling per pod", "A"): (
        {
            _cadvisor("container_cpu_cfs_periods_total", "a"): "0+600x10",
            _cadvisor("container_cpu_cfs_throttled_periods_total", "a"): "0+300x10",
            _cadvisor("container_cpu_cfs_periods_total", "b"): "0+600x10",
            _cadvisor("container_cpu_cfs_throttled_periods_total", "b"): "0x10",
        },
        [('{pod="housing-api-a"}', 0.5), ('{pod="housing-api-b"}', 0)],
    ),
}
SYNTHETIC_VARIABLES = {"__rate_interval": "5m", "job": ".+", "namespace": ".*"}


def test_every_per_pod_panel_is_checked_on_synthetic_pods() -> None:
    per_pod = {(p["title"], t["refId"]) for p, t in queries(load_dashboard()) if "per pod" in p["title"]}
    assert per_pod == set(PER_POD)


@pytest.mark.parametrize("case", sorted(PER_POD), ids=lambda c: f"{c[0]}/{c[1]}")
def test_per_pod_panels_draw_each_pod_against_its_own_limit(tmp_path: Path, case: tuple[str, str]) -> None:
    try:
        promtool_binary()
    except PrometheusUnavailable as exc:
        pytest.skip(str(exc))
    expr = next(t["expr"] for p, t in queries(load_dashboard()) if (p["title"], t["refId"]) == case)
    series, expected = PER_POD[case]
    assert promql_on_series(tmp_path, series, render(expr, SYNTHETIC_VARIABLES), expected) == ""


def test_a_fleet_wide_sum_fails_the_per_pod_check(tmp_path: Path) -> None:
    try:
        promtool_binary()
    except PrometheusUnavailable as exc:
        pytest.skip(str(exc))
    series, expected = PER_POD[("Requests in flight per pod (limit 128)", "A")]
    old = 'sum(housing_api_inflight_requests{job=~".+", namespace=~".*"})'  # the panel before issue 14
    assert "housing-api-a" in promql_on_series(tmp_path, series, old, expected)


# --- the SLO latency panel under overload -------------------------------------------------------
# Quiet: one client at a time, every row a Redis hit. Overload: Redis stalls (SIGSTOP), so every
# admitted request waits REDIS_TIMEOUT_MS on it (no in-process tier, and Redis is retried at once),
# admission fills, and the many more clients than it admits are refused with a fast 429 meanwhile.
# The wait is on I/O, not CPU: the answers are slower than the refusals however busy the machine is.
OVERLOAD_ENV = {
    "MAX_INFLIGHT_REQUESTS": "16",
    "MEMORY_CACHE_ROWS": "0",
    "REDIS_TIMEOUT_MS": "100",
    "REDIS_RETRY_INTERVAL_S": "0",
    "OMP_NUM_THREADS": "1",
}
OVERLOAD_CLIENTS = 64
PHASE_S = 6.0
JSON = {"Content-Type": "application/json"}
LATENCY_PANEL = "Latency of /predict, 2xx answers (SLO: p99 < 50 ms)"
_ROW = (
    '{"MedInc":%.6f,"HouseAge":20,"AveRooms":5.5,"AveBedrms":1.1,"Population":900,"AveOccup":2.8,'
    '"Latitude":36.7,"Longitude":-119.8}'
)
ROWS_PER_BODY = 50
BODIES = [
    ("[" + ",".join(_ROW % (1 + (b * 1000 + k) / 1e6) for k in range(ROWS_PER_BODY)) + "]").encode() for b in range(32)
]


async def _one_client(port: int, deadline: float, n: int, statuses: dict[int, int]) -> None:
    """POST /predict over one keep-alive connection until the deadline. A plain asyncio client:
    httpx's pool costs more CPU per request than the service's 429 does, and would be the limit."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < deadline:
            n += 1
            body = BODIES[n % len(BODIES)]
            head = b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            answer = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", answer)
            await reader.readexactly(int(length[1]) if length else 0)
            status = int(answer.split(b" ", 2)[1])
            statuses[status] = statuses.get(status, 0) + 1
            if re.search(rb"(?im)^connection: *close", answer):
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


async def _post_for(port: int, seconds: float, clients: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(_one_client(port, deadline, n, statuses) for n in range(clients)))
    return statuses


def _phase(port: int, clients: int) -> tuple[float, dict[int, int]]:
    """Send for PHASE_S seconds; returns the instant to evaluate the phase at, and the statuses."""
    statuses = asyncio.run(_post_for(port, PHASE_S, clients))
    at = time.time() + 1  # one more scrape takes in the last answers
    time.sleep(2.5)  # ... and the next phase starts after it
    return at, statuses


@pytest.fixture(scope="module")
def overload(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Prometheus, dict[str, tuple[float, dict[int, int]]]]]:
    try:
        binary = prometheus_binary()
    except PrometheusUnavailable as exc:
        pytest.skip(str(exc))
    tmp = tmp_path_factory.mktemp("prometheus-overload")
    redis = RedisServer(tmp).start()
    server = Server({**OVERLOAD_ENV, "REDIS_URL": redis.url, "CACHE_PREFIX": "overload"})
    prometheus = Prometheus(binary, tmp, [f"127.0.0.1:{server.port}"])
    try:
        prometheus.start()
        server.wait_ready()
        assert prometheus.wait_for_targets(), "Prometheus cannot scrape the service"
        for body in BODIES:  # the model's first calls are not measured, and every row is in Redis
            assert httpx.post(server.url + "/predict", content=body, headers=JSON).is_success
        phases = {"quiet": _phase(server.port, 1)}
        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            phases["overload"] = _phase(server.port, OVERLOAD_CLIENTS)
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        yield prometheus, phases
    finally:
        prometheus.stop()
        if server.proc.poll() is None:
            server.stop()
        redis.stop()


def _panel_value(prometheus: Prometheus, ref: str, at: float, drop: str = "") -> float:
    expr = next(t["expr"] for p, t in queries(load_dashboard()) if (p["title"], t["refId"]) == (LATENCY_PANEL, ref))
    window = {**TEST_VARIABLES, "__rate_interval": f"{PHASE_S + 1:g}s"}
    answer = prometheus.api("query", query=render(expr.replace(drop, ""), window), time=at)
    assert answer["status"] == "success", answer
    (series,) = answer["data"]["result"]
    return float(series["value"][1])


def test_overload_really_refused_requests_and_answered_others(overload: Any) -> None:
    _, phases = overload
    quiet, loaded = phases["quiet"][1], phases["overload"][1]
    assert set(quiet) == {200}, quiet
    assert loaded.get(429, 0) > loaded.get(200, 0) > 0, loaded


def test_under_overload_the_slo_latency_panel_rises(overload: Any) -> None:
    prometheus, phases = overload
    quiet = _panel_value(prometheus, "D", phases["quiet"][0])
    loaded = _panel_value(prometheus, "D", phases["overload"][0])
    assert loaded > quiet, (quiet, loaded)


def test_the_slo_latency_panel_leaves_out_the_fast_refusals(overload: Any) -> None:
    # Over every answer, 429s included (the panel before issue 14), the median is a refusal's and
    # hides what the admitted requests waited; the panel's median is an answer's.
    prometheus, phases = overload
    at = phases["overload"][0]
    answers = _panel_value(prometheus, "A", at)
    everything = _panel_value(prometheus, "A", at, drop=', status="2xx"')
    assert answers > everything, (answers, everything)
