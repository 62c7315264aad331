"""`make bench`: the service against the ceiling app, side by side in one run, with ablations.

Starts its own redis-server, the ceiling app (bench/ceiling_app.py) and the service, drives each
with k6 (bench/k6/bench.js), and prints one table; with --write it also writes docs/benchmarks.md.
A benchmark, not a test: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from harness import RedisServer, free_port  # noqa: E402  (the one process harness, shared with the tests)

BIN = Path(sys.executable).parent
K6 = BIN / "k6"


@dataclass
class Target:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    uses_redis: bool = True


@dataclass
class Result:
    scenario: str
    target: str
    rps: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    failed: float
    rss_mb: float


SCENARIOS: dict[str, dict[str, str]] = {
    "hits": {"MODE": "hits"},
    "misses": {"MODE": "misses"},
    "batch100-half-repeated": {"MODE": "mixed", "BATCH_SIZE": "100", "VUS": "8"},
    "fixed-1000rps-hits": {"MODE": "hits", "EXECUTOR": "rate", "RATE": "1000"},
    "fixed-1000rps-misses": {"MODE": "misses", "EXECUTOR": "rate", "RATE": "1000"},
    "fixed-2000rps-hits": {"MODE": "hits", "EXECUTOR": "rate", "RATE": "2000"},
    "fixed-2000rps-misses": {"MODE": "misses", "EXECUTOR": "rate", "RATE": "2000"},
}


def targets(redis_url: str, ablations: bool) -> list[Target]:
    serve = [str(BIN / "housing-api"), "serve", "--port", "{port}"]
    service_env = {"REDIS_URL": redis_url, "MODEL_PATH": str(ROOT / "model" / "model.joblib"), "LOG_LEVEL": "warning"}
    found = [
        Target(
            "ceiling", [sys.executable, str(ROOT / "bench" / "ceiling_app.py"), "--port", "{port}"], uses_redis=False
        ),
        Target("service", serve, service_env),
    ]
    if ablations:
        found.append(Target("service, micro-batching off", serve, {**service_env, "MICRO_BATCHING": "false"}))
        found.append(Target("service, in-process tier off", serve, {**service_env, "MEMORY_CACHE_ROWS": "0"}))
    return found


class Process:
    """A server process on a free port; records how long it took to become ready."""

    def __init__(self, target: Target) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [a.replace("{port}", str(self.port)) for a in target.argv]
        started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, env={**os.environ, **target.env}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() - started > 60:
                    raise RuntimeError(f"{target.name} did not start") from None
                time.sleep(0.02)
        self.ready_s = time.monotonic() - started

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def warm(url: str, batch: int) -> None:
    """Send the pool rows once so 'hits' scenarios measure hits (bench.js: pool(i) = row(i % 64, 999))."""
    script = ROOT / "bench" / "k6" / "bench.js"
    env = {**os.environ, "BASE_URL": url, "MODE": "hits", "BATCH_SIZE": "64", "VUS": "1", "DURATION": "1s",
           "SUMMARY": os.devnull}  # fmt: skip
    subprocess.run(
        [str(K6), "run", "-q", "--address", "", "--iterations", "1", "--vus", "1", str(script)],
        env=env,
        check=True,
        capture_output=True,
    )


def run_k6(url: str, scenario: dict[str, str], duration: str, tmp: Path, seed: int) -> dict[str, Any]:
    summary = tmp / f"summary-{seed}.json"
    env = {**os.environ, "BASE_URL": url, "DURATION": duration, "SUMMARY": str(summary), "SEED": str(seed), **scenario}
    subprocess.run(
        [str(K6), "run", "-q", "--address", "", str(ROOT / "bench" / "k6" / "bench.js")],
        env=env,
        capture_output=True,
        check=False,
    )
    metrics: dict[str, Any] = json.loads(summary.read_text())["metrics"]
    return metrics


def measure(
    target: Target, name: str, scenario: dict[str, str], duration: str, tmp: Path, seed: int
) -> tuple[Result, float]:
    server = Process(target)
    try:
        warm(server.url, 64)
        m = run_k6(server.url, scenario, duration, tmp, seed)
        rps = m["http_reqs"]["values"]["rate"]
        rows = rps * int(scenario.get("BATCH_SIZE", "1"))
        d = m["http_req_duration"]["values"]
        failed = m["http_req_failed"]["values"]["rate"]
        return Result(name, target.name, rps, rows, d["med"], d["p(99)"], failed, server.rss_mb()), server.ready_s
    finally:
        server.stop()


def flush(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushall()  # our own throwaway server, never a shared one


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    mem = next(
        (line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "0"
    )
    k6 = subprocess.run([str(K6), "version"], capture_output=True, text=True).stdout.strip().splitlines()[0]
    return f"{os.cpu_count()} x {cpu}, {int(mem) // 1024 // 1024} GiB RAM, {platform.platform()}, Python {platform.python_version()}, {k6}"


def table(results: list[Result]) -> str:
    ceiling = {r.scenario: r for r in results if r.target == "ceiling"}
    lines = [
        "| scenario | server | requests/s | rows/s | p50 ms | p99 ms | failed | vs ceiling | RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        base = ceiling.get(r.scenario)
        ratio = (
            f"{r.rows_per_s / base.rows_per_s:.0%}"
            if base and r.target != "ceiling" and "fixed" not in r.scenario
            else ""
        )
        lines.append(
            f"| {r.scenario} | {r.target} | {r.rps:,.0f} | {r.rows_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.failed:.2%} | {ratio} | {r.rss_mb:.0f} |"
        )
    return "\n".join(lines)


def find(results: list[Result], scenario: str, target: str) -> Result | None:
    return next((r for r in results if r.scenario == scenario and r.target == target), None)


def inference_us(text: str, rows: int) -> float | None:
    """The fast path's median µs per call for `rows` rows, from bench/inference.py's table."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == str(rows):
            return float(parts[2])
    return None


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


def targets_table(results: list[Result], ready: list[float], inference: str) -> str:
    rows = ["| target | measured | verdict |", "|---|---|---|"]

    def ratio(scenario: str, goal: float, per_rows: bool = False) -> None:
        svc, base = find(results, scenario, "service"), find(results, scenario, "ceiling")
        if svc is None or base is None:
            rows.append(f"| {scenario} >= {goal:.0%} of ceiling | | not measured |")
            return
        got = (svc.rows_per_s / base.rows_per_s) if per_rows else (svc.rps / base.rps)
        unit = "rows/s" if per_rows else "requests/s"
        rows.append(
            f"| {scenario}: >= {goal:.0%} of the ceiling app's {unit} | {got:.0%} ({svc.rows_per_s if per_rows else svc.rps:,.0f} vs {base.rows_per_s if per_rows else base.rps:,.0f}) | {verdict(got >= goal)} |"
        )

    def p99(scenario: str, goal_ms: float) -> None:
        svc = find(results, scenario, "service")
        if svc is None:
            rows.append(f"| {scenario}: p99 <= {goal_ms:g} ms | | not measured |")
            return
        achieved = f", achieved {svc.rps:,.0f} req/s" if svc.rps < 1900 else ""
        rows.append(
            f"| {scenario}: p99 <= {goal_ms:g} ms | {svc.p99_ms:.2f} ms{achieved} | {verdict(svc.p99_ms <= goal_ms and svc.rps >= 1900)} |"
        )

    ratio("hits", 0.90)
    ratio("misses", 0.65)
    p99("fixed-2000rps-hits", 5)
    p99("fixed-2000rps-misses", 10)
    ratio("batch100-half-repeated", 0.40, per_rows=True)
    for scenario in ("fixed-1000rps-hits", "fixed-1000rps-misses"):
        svc = find(results, scenario, "service")
        if svc is not None:
            rows.append(
                f"| (context, no target) {scenario}: p99 | {svc.p99_ms:.2f} ms at {svc.rps:,.0f} req/s, {svc.failed:.1%} refused | |"
            )
    one, thousand = inference_us(inference, 1), inference_us(inference, 1000)
    rows.append(
        f"| model inference, 1 row: <= 100 µs | {one if one is not None else '?'} µs | {verdict(None if one is None else one <= 100)} |"
    )
    rows.append(
        f"| model inference, 1,000 rows: <= 2 ms | {thousand if thousand is not None else '?'} µs | {verdict(None if thousand is None else thousand <= 2000)} |"
    )
    rss = max((r.rss_mb for r in results if r.target == "service"), default=float("nan"))
    rows.append(
        f"| resident memory <= 250 MB at full load | {rss:.0f} MB (largest after any run here; 10 min: [soak](soak.md)) | {verdict(rss <= 250)} |"
    )
    rows.append(
        f"| ready to serve <= 3 s after start | {min(ready):.2f} to {max(ready):.2f} s | {verdict(max(ready) <= 3)} |"
    )
    return "\n".join(rows)


def report(results: list[Result], ready: list[float], inference: str, args: argparse.Namespace) -> str:
    return f"""# Benchmarks

Produced by one run of `make bench` (`bench/run.py --duration {args.duration}`): every number below
comes from the same run, the service and the ceiling app measured one after the other under the
same conditions. Machine: {machine()}. The load generator (k6, 32 connections unless stated) runs on
the same two cores as the server, as in the reference measurements. A shared machine is noisy:
compare ratios within this run rather than absolute numbers across runs.

The **ceiling app** (`bench/ceiling_app.py`) validates the same request body with the same schema,
runs the same prometheus-fastapi-instrumentator middleware on the same server settings (uvicorn,
uvloop, httptools, one process), and returns a constant: no real service can beat it.

## Targets

{targets_table(results, ready, inference)}

## All runs

Scenarios: **hits** (every request repeats a warmed row), **misses** (every request a row never
sent before; Redis on), **batch100-half-repeated** (100 rows per request, half of them warmed;
8 connections), **fixed-1000rps-*** and **fixed-2000rps-*** (open loop at a fixed offered rate:
latency at a known load; failed requests there are 429s, the service shedding what it cannot carry). Ablations: the same runs with cross-request micro-batching off (`MICRO_BATCHING=false`: one
Redis round trip and one model call per request) and with the in-process tier off
(`MEMORY_CACHE_ROWS=0`). RSS is the server's resident memory right after the run.

{table(results)}

Service ready after start (spawn to first 200 on /readyz): {min(ready):.2f} to {max(ready):.2f} s.

## Model inference (`bench/inference.py`)

```
{inference.strip()}
```
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", default="15s", help="k6 duration of each run")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--write", type=Path, help="write the markdown report here (docs/benchmarks.md)")
    parser.add_argument("--inference", type=Path, help="bench/inference.py output to include in the report")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        redis = RedisServer(tmp).start()
        redis_url = redis.url
        results: list[Result] = []
        ready: list[float] = []
        try:
            for seed, name in enumerate(args.scenarios.split(","), start=1):
                for target in targets(redis_url, not args.no_ablations):
                    flush(redis_url)
                    result, ready_s = measure(target, name, SCENARIOS[name], args.duration, tmp, seed)
                    results.append(result)
                    if target.name == "service":
                        ready.append(ready_s)
                    print(
                        f"{name:24s} {target.name:30s} {result.rps:9,.0f} req/s  p99 {result.p99_ms:7.2f} ms  failed {result.failed:.2%}",
                        flush=True,
                    )
        finally:
            redis.stop()
    print()
    print(f"machine: {machine()}")
    print(f"service ready after start: {min(ready):.2f}..{max(ready):.2f} s")
    print(table(results))
    if args.write:
        inference = args.inference.read_text() if args.inference and args.inference.exists() else ""
        args.write.write_text(report(results, ready, inference, args))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine(), "ready_s": ready, "results": [r.__dict__ for r in results]}, indent=2)
        )


if __name__ == "__main__":
    main()
