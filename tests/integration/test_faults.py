"""Faults under real load: Redis dying mid-run, and three times the service's capacity (k6)."""

from __future__ import annotations

import collections
import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, RedisServer, Server

from housing_api_testing.harness import metric_value

# serial: k6 load through injected faults: parallel workers on the same cores would skew it
# (the Makefile's test target).
pytestmark = [pytest.mark.integration, pytest.mark.serial]
K6 = Path(sys.executable).parent / "k6"
SCRIPT = ROOT / "bench" / "k6" / "bench.js"


def k6(url: str, tmp: Path, **env: str) -> subprocess.Popen[bytes]:
    """Start bench.js in the background; per-request points go to tmp/points.csv (ms timestamps)."""
    if not K6.exists():
        pytest.skip("k6 is not installed in the virtual environment (make install)")
    full_env = {
        **os.environ,
        "BASE_URL": url,
        "SUMMARY": str(tmp / "summary.json"),
        "K6_CSV_TIME_FORMAT": "unix_milli",
        **env,
    }
    argv = [str(K6), "run", "-q", "--address", "", "--out", f"csv={tmp / 'points.csv'}", str(SCRIPT)]
    return subprocess.Popen(argv, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def points(tmp: Path) -> list[tuple[float, float, int]]:
    """(unix seconds, duration ms, status) for every request."""
    found = []
    with (tmp / "points.csv").open() as f:
        for row in csv.DictReader(f):
            if row["metric_name"] == "http_req_duration":
                found.append((int(row["timestamp"]) / 1000, float(row["metric_value"]), int(row["status"] or 0)))
    return found


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def metric(url: str, name: str, **labels: str) -> float:
    return metric_value(httpx.get(url + "/metrics", timeout=5).text, name, **labels)


ORDINARY_ROW = {"MedInc": 3.1, "HouseAge": 20, "AveRooms": 5, "AveBedrms": 1, "Population": 900, "AveOccup": 3,
                "Latitude": 36, "Longitude": -120}  # fmt: skip
REDIS_HITS = {"name": "housing_api_cache_lookups_total", "outcome": "hit", "tier": "redis"}


def test_redis_stopped_mid_run_loses_nothing_and_recovers(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path).start()
    # No in-process tier, so every repeated row is a Redis hit and Redis coming back is visible.
    server = Server({"REDIS_URL": redis.url, "MEMORY_CACHE_ROWS": "0", "REDIS_TIMEOUT_MS": "50"})
    try:
        server.wait_ready()
        load = k6(server.url, tmp_path, MODE="half", EXECUTOR="rate", RATE="300", DURATION="30s")
        time.sleep(8)
        down_at = time.time()
        redis.stop()
        time.sleep(10)
        redis.start()
        up_at = time.time()
        hits_before = metric(server.url, **REDIS_HITS)
        resumed_after = None
        while time.time() - up_at < 10:
            if metric(server.url, **REDIS_HITS) > hits_before:
                resumed_after = time.time() - up_at
                break
            time.sleep(0.2)
        assert load.wait(timeout=120) == 0
        summary = json.loads((tmp_path / "summary.json").read_text())["metrics"]
        during = [ms for t, ms, _ in points(tmp_path) if down_at + 0.5 <= t <= up_at - 0.5]
    finally:
        server.stop()
        redis.stop()
    report = {
        "requests": summary["http_reqs"]["values"]["count"],
        "failed_rate": summary["http_req_failed"]["values"]["rate"],
        "outage_requests": len(during),
        "outage_p99_ms": p99(during),
        "redis_hits_resumed_after_s": resumed_after,
        "statuses": dict(collections.Counter(s for _, _, s in points(tmp_path))),
    }
    (tmp_path / "outage.json").write_text(json.dumps(report))
    print("redis outage under load:", report)  # the p99 is measured and reported, not asserted
    assert summary["http_req_failed"]["values"]["rate"] == 0  # zero failed requests
    assert summary["http_reqs"]["values"]["count"] > 7000
    assert len(during) > 2000
    assert resumed_after is not None, "Redis hits did not resume within 10 s"  # reconnected by itself


def server_side_slow_fraction(url: str) -> float:
    """Share of POST /predict requests the server itself took over 2.5 s (its last bucket) to answer."""
    labels = {"handler": "/predict", "method": "POST"}
    total = metric(url, "http_request_duration_seconds_count", **labels)
    fast = metric(url, "http_request_duration_seconds_bucket", **labels, le="2.5")
    return (total - fast) / total if total else 0.0


def rss_mb(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_three_times_capacity_sheds_with_429_and_recovers(tmp_path: Path) -> None:
    server = Server({})
    peak_rss = [0.0]
    stop = threading.Event()
    try:
        server.wait_ready()
        (tmp_path / "probe").mkdir()
        probe = k6(server.url, tmp_path / "probe", MODE="misses", VUS="32", DURATION="5s")
        assert probe.wait(timeout=60) == 0
        capacity = json.loads((tmp_path / "probe" / "summary.json").read_text())["metrics"]["http_reqs"]["values"][
            "rate"
        ]

        def sample() -> None:
            while not stop.wait(0.5):
                peak_rss[0] = max(peak_rss[0], rss_mb(server.proc.pid))

        threading.Thread(target=sample, daemon=True).start()
        load = k6(
            server.url,
            tmp_path,
            MODE="misses",
            EXECUTOR="rate",
            RATE=str(int(capacity * 3)),
            MAX_VUS="1500",
            DURATION="30s",
        )
        load.wait(timeout=180)
        stop.set()
        server_slow = server_side_slow_fraction(server.url)
        deadlines = metric(server.url, "housing_api_request_timeouts_total", kind="request")
        started = time.monotonic()
        while True:  # back to normal: an ordinary request is answered promptly again
            t0 = time.monotonic()
            r = httpx.post(server.url + "/predict", json=[ORDINARY_ROW])
            if r.status_code == 200 and time.monotonic() - t0 < 0.1:
                break
            assert time.monotonic() - started < 60, "not back to normal 60 s after the overload"
            time.sleep(0.2)
        recovered_s = time.monotonic() - started
        all_points = points(tmp_path)
    finally:
        stop.set()
        server.stop()
    statuses = {s for _, _, s in all_points}
    accepted = [ms for _, ms, s in all_points if s == 200]
    refused = [ms for _, ms, s in all_points if s == 429]
    report = {
        "capacity_rps": capacity, "accepted": len(accepted), "refused": len(refused),
        "client_accepted_p99_ms": p99(accepted), "client_refused_p99_ms": p99(refused) if refused else None,
        "peak_rss_mb": peak_rss[0], "recovered_s": recovered_s, "server_side_over_2_5s": server_slow,
        "statuses": {str(k): sum(1 for _, _, s in all_points if s == k) for k in sorted(statuses)},
        "deadline_503": deadlines,
    }  # fmt: skip
    (tmp_path / "overload.json").write_text(json.dumps(report))
    print("three times capacity:", report)
    assert statuses <= {200, 429}, statuses  # shed with 429, never a 5xx or a dropped connection
    assert refused, "3x capacity was offered but nothing was refused"
    # How fast accepted requests were (inside the service and as k6 saw them) is measured and
    # reported above, not asserted: it depends on what else the machine runs. Memory is asserted.
    assert peak_rss[0] < 400
