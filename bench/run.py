"""`make bench` and `make bench-peers`: servers side by side in one run, alternately, medians.

Throughput scenarios are driven by wrk (a C load generator that needs a fraction of a core, with
bench/wrk/predict.lua building the POST bodies); the fixed-rate latency scenarios by k6
(bench/k6/bench.js), whose open-loop executor wrk lacks. Every scenario runs each server in turn
(ceiling app, service, ...), then again in the opposite order, --rounds times; the report takes
the median of each server's runs, so a burst of load from elsewhere on the machine hits both
sides rather than one. Each scenario starts fresh server processes on an empty Redis; within it
the servers stay up, and every run sends rows that no earlier run sent.

On a machine with two or more CPUs the load generators and redis-server are pinned to the last
CPU (`taskset`), which leaves the others to the server under test. Unpinned, wrk and Redis landed
on the server's core in some runs and not others, and the same server's throughput moved by a
third between runs (the miss path, where Redis works hardest, the most). `--pin-server CPU` pins
every server under test to one CPU as well (default: unpinned, so a server's event loop and its
inference thread may run on any CPU, the load generators' among them).

    bench/run.py --json build/bench.json --write docs/benchmarks.md            # make bench
    bench/run.py --peers --json build/bench-peers.json --write docs/benchmarks.md  # make bench-peers

The report (bench/bench_report.py) is rendered from build/bench.json and build/bench-peers.json, so
each command rewrites docs/benchmarks.md with the latest results of both. A benchmark, not a
test: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import bench_report as report  # noqa: E402  (beside this file)

from housing_api_testing.harness import Proc, RedisServer, Unavailable, free_port, wait_until  # noqa: E402  (shared with the tests)

BIN = Path(sys.executable).parent
K6 = BIN / "k6"
WRK_SCRIPT = ROOT / "bench" / "wrk" / "predict.lua"
K6_SCRIPT = ROOT / "bench" / "k6" / "bench.js"
MLSERVER_VENV = ROOT / "build" / "mlserver-venv"
POOL = 64
RAW = report.RAW
"""The raw ASGI anchor's name in the results (bench/raw_asgi_app.py)."""
"""Warmed rows; bench.js's pool(i) is the same row(i % 64, 999)."""


def load_cpu() -> list[str]:
    """The prefix that pins a load generator to the last CPU; empty on one CPU or without taskset."""
    cpus = os.cpu_count() or 1
    return ["taskset", "-c", str(cpus - 1)] if cpus > 1 and shutil.which("taskset") else []


def pin_to_load_cpu(pid: int) -> None:
    if prefix := load_cpu():
        subprocess.run(["taskset", "-pc", prefix[-1], str(pid)], capture_output=True, check=True)


def server_cpu(cpu: int | None) -> list[str]:
    """--pin-server: the prefix that pins every server under test (and its threads) to one CPU, so
    a run cannot differ from the next by where the scheduler put the event loop and the inference
    thread (the spread question of issue 26); empty by default."""
    if cpu is None:
        return []
    if shutil.which("taskset") is None:
        sys.exit("--pin-server needs taskset (util-linux)")
    if load_cpu() and cpu == int(load_cpu()[-1]):
        print(f"warning: --pin-server {cpu} is the load generators' CPU too", file=sys.stderr)
    return ["taskset", "-c", str(cpu)]


@dataclass(frozen=True)
class Scenario:
    name: str
    tool: str  # wrk | k6
    mode: str  # hits | misses | mixed
    batch: int = 1
    connections: int = 32
    rate: int = 0  # k6 only: offered requests/s


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("hits", "wrk", "hits"),
        Scenario("misses", "wrk", "misses"),
        Scenario("batch100-half-repeated", "wrk", "mixed", batch=100, connections=8),
        Scenario("fixed-1000rps-hits", "k6", "hits", rate=1000),
        Scenario("fixed-1000rps-misses", "k6", "misses", rate=1000),
    )
}


@dataclass
class Target:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/readyz"
    predict_path: str = "/predict"
    body_format: str = "service"  # service | v2 (MLServer's V2 inference protocol)
    ablation: bool = False


@dataclass
class Run:
    """One server under one scenario for one duration."""

    scenario: str
    target: str
    round: int
    rps: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    failed: float
    rss_mb: float
    ready_s: float
    load1: float
    process: int = 0
    """Which of the scenario's fresh starts of every server ran it (--processes)."""


def service_targets(redis_url: str, ablations: bool, variants: list[str] | None = None) -> list[Target]:
    serve = [str(BIN / "housing-api"), "serve", "--port", "{port}"]
    env = {"REDIS_URL": redis_url, "MODEL_PATH": str(ROOT / "model" / "model.joblib"), "LOG_LEVEL": "warning"}
    found = [
        Target("ceiling", [sys.executable, str(ROOT / "bench" / "ceiling_app.py"), "--port", "{port}"]),
        Target(RAW, [sys.executable, str(ROOT / "bench" / "raw_asgi_app.py"), "--port", "{port}"]),
        Target("service", serve, env),
    ]
    if ablations:
        found.append(Target("service, micro-batching off", serve, {**env, "MICRO_BATCHING": "false"}, ablation=True))
        found.append(Target("service, in-process tier off", serve, {**env, "MEMORY_CACHE_ROWS": "0"}, ablation=True))
    for variant in variants or []:  # --variant NAME=VALUE: the service with one more setting, for tuning
        name, _, value = variant.partition("=")
        found.append(Target(f"service, {variant}", serve, {**env, name: value}, ablation=True))
    return found


def mlserver_target(tmp: Path) -> Target:
    """Seldon MLServer serving the committed model.joblib: one process, its response cache on."""
    binary = MLSERVER_VENV / "bin" / "mlserver"
    if not binary.exists():
        sys.exit(f"{binary} is missing: make bench-peers installs it")
    folder = tmp / "mlserver"
    (folder / "housing").mkdir(parents=True, exist_ok=True)
    model = {
        "name": "housing",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(ROOT / "model" / "model.joblib")},
        "cache_enabled": True,  # the server's cache_enabled alone leaves a model uncached
    }
    (folder / "housing" / "model-settings.json").write_text(json.dumps(model))
    # The ports are filled in per start (Process), because every run gets a fresh process.
    return Target(
        "MLServer",
        [str(binary), "start", str(folder)],
        # model.joblib's Pipeline calls housing_api.coordinates.append_derived, which MLServer's venv
        # imports from the source tree (it needs numpy only; the service itself is not installed there).
        env={"MLSERVER_SETTINGS_DIR": str(folder), "PYTHONPATH": str(ROOT / "src")},
        ready_path="/v2/models/housing/ready",
        predict_path="/v2/models/housing/infer",
        body_format="v2",
    )


def write_mlserver_settings(folder: Path, http_port: int) -> None:
    settings = {
        "debug": False,
        "parallel_workers": 0,  # inference in the server process itself: one process, like the service
        "cache_enabled": True,
        "cache_size": 100_000,  # its only cache: ten times the service's in-process tier (which has Redis behind it)
        "http_port": http_port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "gzip_enabled": False,
    }
    (folder / "settings.json").write_text(json.dumps(settings))


class Process(Proc):
    """A target's server on a free port; records how long it took to become ready."""

    def __init__(self, target: Target) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if "MLSERVER_SETTINGS_DIR" in target.env:
            write_mlserver_settings(Path(target.env["MLSERVER_SETTINGS_DIR"]), self.port)
        argv = [a.replace("{port}", str(self.port)) for a in target.argv]
        super().__init__(argv, {"OMP_NUM_THREADS": "1", **target.env})
        started = time.monotonic()
        self.spawn()
        ready = wait_until(
            lambda: not self.alive() or httpx.get(self.url + target.ready_path, timeout=1).status_code == 200,
            timeout_s=90,
            interval_s=0.02,
        )
        if not ready or not self.alive():
            self.stop(timeout_s=5)
            raise RuntimeError(f"{target.name} did not start")
        self.ready_s = time.monotonic() - started

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


# -- the rows ----------------------------------------------------------------------------------
def pool_row(n: int) -> list[float]:
    """bench.js's row(n, 999), the warmed pool; wrk's fresh rows change its Population only."""
    return [1.5 + (n % 4096) / 1024, float(5 + n % 40), 4.5 + (n % 7) / 10, 1.05,
            float(200 + n // 4096 + 999 * 1_000_000), 2.7, 34.0 + (n % 50) / 25, -118.3 - (n % 30) / 15]  # fmt: skip


def write_pool(path: Path) -> None:
    path.write_text("".join(",".join(repr(v) for v in pool_row(n)) + "\n" for n in range(POOL)))


def one_row_body(row: list[float], body_format: str) -> bytes:
    """The exact text wrk sends for a one-row hit (MLServer's response cache keys on the request)."""
    if body_format == "v2":
        data = ",".join(repr(v) for v in row)
        return f'{{"inputs":[{{"name":"input-0","shape":[1,8],"datatype":"FP64","data":[{data}]}}]}}'.encode()
    names = ("MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude")
    return ("[{" + ",".join(f'"{k}":{v!r}' for k, v in zip(names, row, strict=True)) + "}]").encode()


def warm(server: Process, target: Target) -> None:
    """Send every pool row once, as the one-row request a hit scenario sends, so hits are hits."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for n in range(POOL):
            response = client.post(
                target.predict_path,
                content=one_row_body(pool_row(n), target.body_format),
                headers={"Content-Type": "application/json"},
            )
            response.raise_for_status()


# -- the load generators -----------------------------------------------------------------------
def run_wrk(url: str, target: Target, scenario: Scenario, duration: str, seed: int, pool: Path) -> dict[str, float]:
    argv = [*load_cpu(), "wrk", "-t", "1", "-c", str(scenario.connections), "-d", duration, "--latency", "-s", str(WRK_SCRIPT),
            url + target.predict_path, "--", scenario.mode, str(scenario.batch), str(seed), target.body_format,
            str(pool)]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    found = re.search(r"^WRK_JSON (\{.*\})$", out, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    w = json.loads(found.group(1))
    seconds = w["duration_us"] / 1e6
    errors = w["status_errors"] + w["timeouts"] + w["read_errors"] + w["write_errors"] + w["connect_errors"]
    return {
        "rps": w["requests"] / seconds,
        "p50_ms": w["p50_us"] / 1e3,
        "p99_ms": w["p99_us"] / 1e3,
        "failed": errors / max(w["requests"], 1),
    }


def run_k6(url: str, scenario: Scenario, duration: str, seed: int, tmp: Path) -> dict[str, float]:
    summary = tmp / f"k6-{seed}.json"
    env = {**os.environ, "BASE_URL": url, "DURATION": duration, "SUMMARY": str(summary), "SEED": str(seed),
           "MODE": scenario.mode, "BATCH_SIZE": str(scenario.batch), "EXECUTOR": "rate", "RATE": str(scenario.rate)}  # fmt: skip
    subprocess.run([*load_cpu(), str(K6), "run", "-q", "--address", "", str(K6_SCRIPT)], env=env, capture_output=True,
                   check=False)  # fmt: skip
    m = json.loads(summary.read_text())["metrics"]
    d = m["http_req_duration"]["values"]
    return {"rps": m["http_reqs"]["values"]["rate"], "p50_ms": d["med"], "p99_ms": d["p(99)"],
            "failed": m["http_req_failed"]["values"]["rate"]}  # fmt: skip


def measure(server: Process, target: Target, scenario: Scenario, rnd: int, args: argparse.Namespace, tmp: Path,
            seed: int, process: int) -> Run:  # fmt: skip
    load1 = os.getloadavg()[0]
    if scenario.tool == "wrk":
        m = run_wrk(server.url, target, scenario, args.duration, seed, tmp / "pool.txt")
    else:
        m = run_k6(server.url, scenario, args.k6_duration or args.duration, seed, tmp)
    return Run(scenario.name, target.name, rnd, m["rps"], m["rps"] * scenario.batch, m["p50_ms"], m["p99_ms"],
               m["failed"], server.rss_mb(), server.ready_s, load1, process)  # fmt: skip


def run_scenario(scenario: Scenario, targets: list[Target], args: argparse.Namespace, tmp: Path,
                 seeds: Iterator[int]) -> Iterator[Run]:  # fmt: skip
    """--processes times: fresh processes of every target, --rounds rounds on them. The spread
    between processes is what a fresh start of one build varies by (issue 26 asks for it)."""
    for process in range(args.processes):
        yield from run_processes(scenario, targets, args, tmp, seeds, process)


def run_processes(scenario: Scenario, targets: list[Target], args: argparse.Namespace, tmp: Path,
                  seeds: Iterator[int], process: int) -> Iterator[Run]:  # fmt: skip
    """Start every target once (one after the other, so each one's start-up time is its own),
    then take turns: A B C, C B A, A B C, ... for --rounds rounds. Every run sends rows no earlier
    run sent (its own seed), so the servers can stay up between runs and a run is short enough
    for load from elsewhere on the machine to fall on both sides of a ratio. Rounds are numbered
    across processes, so that each round's ratio pairs runs that ran back to back."""
    servers: list[tuple[Target, Process]] = []
    try:
        for target in targets:
            server = Process(target)
            servers.append((target, server))
            warm(server, target)
        for rnd in range(process * args.rounds, (process + 1) * args.rounds):
            if args.flush_rounds:  # the decline-with-age experiment: Redis as empty as at the start
                flush(args.redis_url)
                for target, server in servers:
                    warm(server, target)
            for target, server in servers if rnd % 2 == 0 else servers[::-1]:
                yield measure(server, target, scenario, rnd, args, tmp, next(seeds), process)
    finally:
        for _, server in servers:
            server.stop()


# -- redis -------------------------------------------------------------------------------------
def flush(redis_url: str) -> None:
    import redis

    # Our own throwaway server, never a shared one. Freeing the millions of keys a batch scenario
    # writes takes seconds (the 15:59 run of 2026-12-02 died here on a read timeout); synchronous on
    # purpose, so that no background free runs into the next measurement.
    redis.Redis.from_url(redis_url, socket_timeout=300).flushall()


# -- the profile -------------------------------------------------------------------------------
def profile(target: Target, scenario: Scenario, args: argparse.Namespace, tmp: Path, out: Path) -> None:
    """py-spy samples the service while wrk drives `scenario`; collapsed stacks go to `out`."""
    py_spy = BIN / "py-spy"
    server = Process(target)
    try:
        warm(server, target)
        spy = subprocess.Popen(
            [str(py_spy), "record", "--pid", str(server.pid), "--rate", "250", "--format", "raw",
             "--output", str(out), "--nonblocking", "--threads"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(1.0)  # py-spy attaches
        run_wrk(server.url, target, scenario, args.duration, 9000, tmp / "pool.txt")
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        _, err = spy.communicate(timeout=60)
        if spy.returncode not in (0, -signal.SIGINT) and not out.exists():
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')}")
    finally:
        server.stop()


# -- the machine -------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")  # fmt: skip
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")  # fmt: skip
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(" [")[0].strip()
    k6 = subprocess.run([str(K6), "version"], capture_output=True, text=True).stdout.strip().splitlines()
    return {
        "machine": f"{os.cpu_count()} x {cpu}, {int(mem) // 1024 // 1024} GiB RAM, {platform.platform()}",
        "python": platform.python_version(),
        "wrk": wrk,
        "k6": k6[0].split(" (")[0] if k6 else "k6 missing",
    }


def commit() -> str:
    """The commit measured, and whether the work tree differed from it."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    # The code that ran: a report written by an earlier run (docs/) does not count.
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--",
                            "src", "bench", "pyproject.toml", "uv.lock"], capture_output=True, text=True)  # fmt: skip
    return sha.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def mlserver_version() -> str:
    out = subprocess.run([str(MLSERVER_VENV / "bin" / "mlserver"), "--version"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="6s", help="wrk duration of each run")
    parser.add_argument("--k6-duration", default=None, help="k6 duration of each fixed-rate run (default --duration)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every server on each of its processes")
    parser.add_argument("--processes", type=int, default=3, help="fresh starts of every server in every scenario")
    parser.add_argument("--flush-rounds", action="store_true",
                        help="empty Redis (and warm again) before every round, not only every scenario")  # fmt: skip
    parser.add_argument("--scenarios", default=None, help="comma-separated subset of: " + ",".join(SCENARIOS))
    parser.add_argument("--no-ablations", action="store_true", help="only the ceiling app and the service")
    parser.add_argument("--variant", action="append", default=[], help="also the service with NAME=VALUE set")
    parser.add_argument("--peers", action="store_true", help="the wrk scenarios against MLServer too (bench-peers)")
    parser.add_argument("--profile", type=Path, help="also py-spy the service under the batch scenario, to this file")
    parser.add_argument("--profile-scenario", default="batch100-half-repeated", choices=list(SCENARIOS))
    parser.add_argument("--inference", type=Path, help="bench/inference.py output to include in the report")
    parser.add_argument("--pin-server", type=int, metavar="CPU",
                        help="pin every server under test to this CPU (taskset); default: unpinned")  # fmt: skip
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--write", type=Path, help="render the markdown report here (docs/benchmarks.md)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: make deps (apt-get install wrk)")
    default = [s for s in SCENARIOS if not args.peers or SCENARIOS[s].tool == "wrk"]
    names = args.scenarios.split(",") if args.scenarios else default
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        write_pool(tmp / "pool.txt")
        try:
            redis_server = RedisServer(tmp).start()
            pin_to_load_cpu(redis_server.pid)
        except Unavailable as exc:
            sys.exit(str(exc))
        redis_url = args.redis_url = redis_server.url
        started = {"uptime": uptime(), "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        began = time.monotonic()
        runs: list[Run] = []
        profile_text = ""
        try:
            base = service_targets(redis_url, not args.no_ablations and not args.peers, args.variant)
            if args.peers:
                base.append(mlserver_target(tmp))
            if pin := server_cpu(args.pin_server):
                base = [replace(t, argv=[*pin, *t.argv]) for t in base]
            seeds = itertools.count(1)
            for name in names:
                scenario = SCENARIOS[name]
                flush(redis_url)
                for run in run_scenario(scenario, [t for t in base if scenario.tool == "wrk" or not t.ablation],
                                        args, tmp, seeds):  # fmt: skip
                    runs.append(run)
                    print(f"round {run.round + 1} {name:24s} {run.target:30s} {run.rps:9,.0f} req/s "
                          f"{run.rows_per_s:9,.0f} rows/s  p99 {run.p99_ms:7.2f} ms  failed {run.failed:.2%}  "
                          f"load {run.load1:.2f}", flush=True)  # fmt: skip
            if args.profile:
                flush(redis_url)
                service = next(t for t in base if t.name == "service")
                profile(service, SCENARIOS[args.profile_scenario], args, tmp, args.profile)
                profile_text = args.profile.read_text()
        finally:
            redis_server.stop()
    result = {
        **machine(),
        "commit": commit(),
        "started": started,
        "finished": {"uptime": uptime(), "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
        "duration": args.duration,
        "k6_duration": args.k6_duration or args.duration,
        "rounds": args.rounds,
        "processes": args.processes,
        "pin_server": args.pin_server,
        "elapsed_s": round(time.monotonic() - began),
        "runs": [asdict(r) for r in runs],
        "profile": report.summarise_profile(profile_text) if profile_text else None,
        "inference": args.inference.read_text() if args.inference and args.inference.exists() else "",
    }
    if args.peers:
        result["mlserver"] = mlserver_version()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(report.runs_table(report.medians(result)))
    if args.write:
        bench_json = args.json if not args.peers else args.json.with_name("bench.json")
        peers_json = args.json if args.peers else args.json.with_name("bench-peers.json")
        report.write(args.write, bench_json, peers_json)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
