"""The dashboard against a real Prometheus scraping a real `housing-api serve` every second.

Traffic with cache hits in every tier, misses, model calls and a 422 is sent; then every query of
every panel is evaluated through Prometheus's HTTP API, exactly as Grafana would send it (with its
variables substituted). Each service query must return series with the expected labels; each
Kubernetes-only query (prom.K8S_ONLY_METRICS) must parse. Every exported metric must be scraped
with its labels, so renaming or dropping one fails here even if no panel reads it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import RedisServer
from prom import (
    JOB,
    PROMETHEUS_INSTALL,
    Prometheus,
    PrometheusUnavailable,
    exported_series,
    is_k8s_only,
    load_dashboard,
    prometheus_binary,
    queries,
    render,
)
from test_serve import Server

from housing_api import __version__
from housing_api.schemas import SAMPLE_BATCH

pytestmark = pytest.mark.integration

Labels = frozenset[str]
ANY: dict[str, set[str]] = {}

# Per (panel title, refId): the label names every result series has, and label values that must
# be among the results. Kubernetes-only queries are not listed: they only have to parse.
EXPECTED: dict[tuple[str, str], tuple[Labels, dict[str, set[str]]]] = {
    ("Requests per second by status class", "A"): (frozenset({"status"}), {"status": {"2xx", "4xx"}}),
    **{("Latency of /predict (SLO: p99 < 50 ms)", ref): (frozenset(), ANY) for ref in "ABCD"},
    ("Error ratio", "A"): (frozenset(), ANY),
    ("Error ratio", "B"): (frozenset(), ANY),
    ("Requests in flight", "A"): (frozenset(), ANY),
    ("Requests in flight", "B"): (
        frozenset({"method", "handler"}),
        {"handler": {"/predict", "/readyz"}, "method": {"GET", "POST"}},
    ),
    ("p99 latency by route", "A"): (frozenset({"method", "handler"}), {"handler": {"/predict", "/readyz"}}),
    ("Request and response size of /predict", "A"): (frozenset(), ANY),
    ("Request and response size of /predict", "B"): (frozenset(), ANY),
    ("Cache hit ratio per tier", "A"): (frozenset({"tier"}), {"tier": {"http", "memory", "redis"}}),
    ("Rows per second by source", "A"): (frozenset({"source"}), {"source": {"http", "memory", "redis", "model"}}),
    ("Model inference duration (p50, p99)", "A"): (frozenset(), ANY),
    ("Model inference duration (p50, p99)", "B"): (frozenset(), ANY),
    ("Rows per model call", "A"): (frozenset(), ANY),
    ("Rows per model call", "B"): (frozenset(), ANY),
    ("Queue depth by stage", "A"): (frozenset({"stage"}), {"stage": {"redis", "model", "redis_write"}}),
    ("Rejected requests (429) by reason", "A"): (
        frozenset({"reason"}),
        {"reason": {"inflight_full", "queue_full"}},
    ),
    ("Redis errors per second by operation", "A"): (frozenset({"op"}), {"op": {"ping", "get", "set"}}),
    ("Pods serving without Redis", "A"): (frozenset(), ANY),
    ("Pods per model version", "A"): (frozenset({"version"}), ANY),
    ("Pods per build", "A"): (frozenset({"version"}), {"version": {__version__}}),
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
    redis = RedisServer(tmp).start()
    env = {"REDIS_URL": redis.url, "CACHE_PREFIX": "prom", "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    server = Server({**env, **SERVER_ENV})
    prometheus = Prometheus(binary, tmp, [f"127.0.0.1:{server.port}"])
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
        redis.stop()


def _dashboard_queries() -> list[tuple[str, str, str]]:
    return [(panel["title"], target["refId"], target["expr"]) for panel, target in queries(load_dashboard())]


SERVICE_QUERIES = [q for q in _dashboard_queries() if not is_k8s_only(q[2])]
K8S_QUERIES = [q for q in _dashboard_queries() if is_k8s_only(q[2])]


def _ids(q: tuple[str, str, str]) -> str:
    return f"{q[0]}/{q[1]}"


def test_without_prometheus_and_root_the_skip_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import prom

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
    result = stack.prometheus.query(render(expr))
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
