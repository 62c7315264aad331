"""Two checkouts of the service side by side: one-row POST /predict hits and misses.

    .venv/bin/python bench/compare_checkouts.py before=/path/to/old/checkout after=. [--rounds 4 --seconds 6]
    .venv/bin/python bench/compare_checkouts.py before=/old/checkout after=. [more=...] --instructions [--requests 400]
    .venv/bin/python bench/compare_checkouts.py standalone=. cluster=.:cluster --instructions
    .venv/bin/python bench/compare_checkouts.py before=/old after=. raw=app:raw ceiling=app:ceiling --instructions \
        --scenarios hit,miss,batch100

A variant is NAME=PATH, or NAME=PATH:cluster to run that checkout with REDIS_MODE=cluster against a
3-master Redis Cluster without replicas (housing_api_testing/harness.py), started next to the standalone redis-server,
so one run compares the modes of one checkout side by side (issue 23). A hit is an in-process hit
unless --no-memory-tier (MEMORY_CACHE_ROWS=0) makes every hit a Redis hit. NAME=app:raw and
NAME=app:ceiling count `make bench`'s anchors (bench/raw_asgi_app.py, bench/ceiling_app.py) the same
way, so a change can be read as a distance to them before a quiet machine is free for wrk (issue 26).
Scenarios (--scenarios): hit and miss (one row), batch100 (100 rows, the even ones the same 50 rows
every time, the odd ones new: the `make bench` batch scenario's mix).

Each checkout needs its C extension built in its src/ (`make install` there). For a change of the
request path (issue 10's rule: hits and misses may not drop by more than 5%). Every round starts
each checkout's service in turn against one throwaway redis-server, warms it for 2 s, then runs
wrk (1 thread, 32 connections) for --seconds. Besides requests/s it reports the server's CPU time
per request, read from /proc, which depends much less on what else the machine runs than
throughput does. Medians over the rounds.

--instructions counts what the server executes instead of timing it, which gives the same number
however busy the machine is: each checkout's service runs under valgrind's callgrind with
instrumentation off (`--instr-atstart=no`, so startup is only a few times slower), is warmed up
with --warmup requests, then `callgrind_control -i on` starts counting, --requests requests are sent
one after another on one keep-alive connection by a small client in this process, each miss
followed by a wait for its write-behind to reach Redis (writes that pile up share one EVALSHA, and
how many do would depend on timing) and each request by a --pause-ms pause, and
`callgrind_control -d` dumps the count. Instructions per request cover everything the process does
in that window (parsing, the app, the event loop's wake-ups, Redis I/O on the miss path), not what
the client or redis-server do. Misses use a distinct row per request (a fixed sequence, so every run
sends the same bytes), hits one row; PYTHONHASHSEED is fixed, and REDIS_TIMEOUT_MS raised so that
Redis calls slowed down by callgrind do not time out (which took Redis out of use in some runs and
not others: misses then varied by 9%). Slow (a request takes ~10 ms under
callgrind), so a few hundred requests per scenario; one round is enough (docs/benchmarks.md,
"Instructions per request" has the repeatability).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
from housing_api_testing.harness import RedisClusterNodes, RedisServer, ServiceProcess  # noqa: E402  (the one process harness)

ROW = (
    '{"MedInc": %s, "HouseAge": 42, "AveRooms": 6.98, "AveBedrms": 1.02, "Population": 322, '
    '"AveOccup": 2.55, "Latitude": 37.88, "Longitude": -122.23}'
)
HIT = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = \'[' + ROW % "8.3252" + "]'\n"
MISS = (
    "local n = 0\n"
    "request = function()\n"
    "  n = n + 1\n"
    "  local body = string.format('[" + ROW % "%.12f" + "]', 1 + (n * 7 + math.random(1, 1000000000)) / 1e9)\n"
    '  return wrk.format("POST", "/predict", {["Content-Type"] = "application/json"}, body)\n'
    "end\n"
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, script: Path, seconds: str) -> tuple[float, int]:
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}", "-s", str(script), url + "/predict"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    assert rps and count, out
    return float(rps.group(1)), int(count.group(1))


def one_run(checkout: Path, redis_url: str, prefix: str, script: Path, seconds: str) -> tuple[float, float]:
    env = {"PYTHONPATH": str(checkout / "src"), "REDIS_URL": redis_url, "CACHE_PREFIX": prefix, "LOG_LEVEL": "warning"}
    service = ServiceProcess(env, checkout=checkout).start()
    try:
        wrk(service.url, script, "2s")
        before = cpu_seconds(service.pid)
        rps, count = wrk(service.url, script, seconds)
        return rps, (cpu_seconds(service.pid) - before) / count * 1e6
    finally:
        service.stop()


def miss_body(n: int) -> bytes:
    """The n-th miss row: the same sequence every run, a row no earlier request sent."""
    return ("[" + ROW % f"{1 + n / 1e7:.7f}" + "]").encode()


HIT_BODY = ("[" + ROW % "8.3252" + "]").encode()


def batch_body(n: int) -> bytes:
    """The n-th 100-row half-repeated batch: the same 50 rows at the even positions (warm after the
    first request), a row no earlier request sent at each odd one."""
    rows = [ROW % (f"{3 + j / 1000:.3f}" if j % 2 == 0 else f"{1 + (n * 50 + j // 2) / 1e7:.7f}") for j in range(100)]
    return ("[" + ",".join(rows) + "]").encode()


def bodies(scenario: str) -> Iterator[bytes]:
    if scenario == "hit":
        return (HIT_BODY for _ in iter(int, 1))
    if scenario == "miss":
        return (miss_body(n) for n in itertools.count())
    return (batch_body(n) for n in itertools.count())


SCENARIOS = ("hit", "miss", "batch100")
ANCHORS = {"raw": "raw_asgi_app.py", "ceiling": "ceiling_app.py"}
"""NAME=app:raw and NAME=app:ceiling: the anchors of `make bench` (bench/), counted like a checkout."""


def send(conn: http.client.HTTPConnection, body: bytes, retry: bool = True) -> None:
    try:
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
    except (ConnectionError, http.client.RemoteDisconnected):
        # The server closed the idle connection (callgrind_control can take longer than an old
        # checkout's keep-alive timeout): open another, once.
        conn.close()
        if not retry:
            raise
        send(conn, body, retry=False)
        return
    response.read()
    assert response.status == 200, response.status


def callgrind(pid: int, *command: str) -> None:
    # vgdb underneath: it reaches the process even while it sleeps in epoll_wait.
    subprocess.run(["callgrind_control", *command, str(pid)], check=True, capture_output=True, timeout=120)


def instructions(out_file: Path) -> int:
    """The total Ir of a callgrind dump."""
    for line in out_file.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"no totals in {out_file}")


class Store:
    """Where a variant's service keeps its Redis tier: the standalone server or the cluster's masters."""

    def __init__(self, mode: str, url: str, servers: list[RedisServer]) -> None:
        self.mode, self.url, self.servers = mode, url, servers
        self.clients: list[Any] = []

    def open(self) -> Store:
        self.clients = [s.client() for s in self.servers]
        return self

    def dbsize(self) -> int:
        return sum(int(c.dbsize()) for c in self.clients)

    def close(self) -> None:
        for c in self.clients:
            c.close()


def written(redis: Store, before: int) -> None:
    """Until the miss's write-behind has reached Redis; an error if it does not within 5 s."""
    deadline = time.monotonic() + 5
    while redis.dbsize() <= before:
        if time.monotonic() > deadline:
            raise RuntimeError("a miss was not written to Redis: was Redis out of use (timeouts)?")
        time.sleep(0.001)


def counted_run(checkout: Path, redis: Store, prefix: str, scenario: str, args: argparse.Namespace, tmp: Path) -> float:
    """Instructions per request of one scenario, counted by callgrind (see the module docstring)."""
    out = tmp / f"callgrind.{prefix}"
    # Redis' 50 ms timeout would fire under callgrind's slowdown, and a Redis out of use is a cheaper path.
    env = {"PYTHONPATH": str(checkout / "src"), "REDIS_URL": redis.url, "CACHE_PREFIX": prefix,
           "LOG_LEVEL": "warning", "PYTHONHASHSEED": str(args.hash_seed), "REDIS_TIMEOUT_MS": "5000"}  # fmt: skip
    if args.no_memory_tier:  # every hit is a Redis hit: the path where the Redis mode matters
        env["MEMORY_CACHE_ROWS"] = "0"
    if redis.mode == "cluster":  # an old checkout knows no REDIS_MODE: standalone is left unset
        env["REDIS_MODE"] = "cluster"
    service = ServiceProcess(env, checkout=checkout)
    anchor = ANCHORS.get(str(checkout).removeprefix("app:")) if str(checkout).startswith("app:") else None
    if anchor is not None:  # an anchor app of this checkout's bench/, on the same kind of port
        service.argv = [sys.executable, str(ROOT / "bench" / anchor), "--port", str(service.port)]
        service.cwd = ROOT
    service.argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *service.argv]
    service.start(timeout_s=600)
    try:
        sent = bodies(scenario)
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
        client = redis.open()
        for n in range(args.warmup + args.requests):
            if n == args.warmup:
                callgrind(service.pid, "-i", "on")
            keys = client.dbsize()
            send(conn, next(sent))
            # Each miss's write-behind runs alone: writes that pile up share one EVALSHA, and how
            # many do would depend on timing, which is what this mode leaves out.
            if scenario != "hit" and anchor is None:
                written(client, keys)
            time.sleep(args.pause_ms / 1000)
        callgrind(service.pid, "-d")
        conn.close()
        client.close()
        dumps = sorted(tmp.glob(f"callgrind.{prefix}.*"))
        assert len(dumps) == 1, dumps
        return instructions(dumps[0]) / int(args.requests)
    finally:
        service.stop()


def count_instructions(variants: dict[str, Path], modes: dict[str, str], args: argparse.Namespace) -> None:
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp)).start()
        stores = {"standalone": Store("standalone", redis.url, [redis])}
        cluster = None
        try:
            if "cluster" in modes.values():
                cluster = RedisClusterNodes(Path(tmp) / "cluster", masters=3, replicas=0).start()
                stores["cluster"] = Store("cluster", cluster.url, cluster.nodes)
            for r in range(args.rounds):
                for name, checkout in variants.items():
                    for scenario in args.scenarios.split(","):
                        dumps = args.dumps or Path(tmp)
                        store = stores[modes[name]]
                        ir = counted_run(checkout, store, f"ir{r}{name}{scenario}", scenario, args, dumps)
                        results.setdefault((name, scenario), []).append(ir)
                        print(f"round {r} {name:10s} {scenario:4s} {ir:10.0f} instructions/request", flush=True)
        finally:
            if cluster is not None:
                cluster.stop()
            redis.stop()
    first, *others = variants
    for scenario in args.scenarios.split(","):
        a = statistics.median(results[(first, scenario)])
        vs = [f"{o} {(b := statistics.median(results[(o, scenario)])):.0f} ({b / a:.3f}x)" for o in others]
        print(f"{scenario}: instructions per request {first} {a:.0f} vs {', '.join(vs)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "checkouts", nargs="+", help="NAME=PATH, twice (--instructions: twice or more; PATH:cluster for Redis Cluster)"
    )
    parser.add_argument("--rounds", type=int, help="4 by default; 1 with --instructions")
    parser.add_argument("--seconds", default="6s")
    parser.add_argument("--instructions", action="store_true", help="count instructions with callgrind instead")
    parser.add_argument("--requests", type=int, default=400, help="--instructions: requests counted per scenario")
    parser.add_argument("--warmup", type=int, default=200, help="--instructions: requests before counting")
    parser.add_argument("--dumps", type=Path, help="--instructions: keep callgrind's dumps here (callgrind_annotate)")
    parser.add_argument(
        "--no-memory-tier", action="store_true", help="--instructions: MEMORY_CACHE_ROWS=0, so hits are Redis hits"
    )
    parser.add_argument("--pause-ms", type=float, default=5, help="--instructions: pause after each request")
    parser.add_argument("--hash-seed", type=int, default=0, help="--instructions: PYTHONHASHSEED of the services")
    parser.add_argument("--scenarios", default="hit,miss", help=f"--instructions: comma-separated, of {SCENARIOS}")
    args = parser.parse_args()
    specs = {name: spec for name, spec in (c.split("=", 1) for c in args.checkouts)}
    modes = {name: "cluster" if spec.endswith(":cluster") else "standalone" for name, spec in specs.items()}
    variants = {name: _variant(spec) for name, spec in specs.items()}
    if args.instructions:
        args.rounds = args.rounds or 1
        count_instructions(variants, modes, args)
        return
    if "cluster" in modes.values():
        parser.error(":cluster needs --instructions")
    if len(variants) != 2:
        parser.error("give two checkouts")
    args.rounds = args.rounds or 4
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scripts = {"hit": Path(tmp) / "hit.lua", "miss": Path(tmp) / "miss.lua"}
        scripts["hit"].write_text(HIT)
        scripts["miss"].write_text(MISS)
        redis = RedisServer(Path(tmp)).start()
        try:
            for r in range(args.rounds):
                order = list(variants.items()) if r % 2 == 0 else list(reversed(variants.items()))
                for name, checkout in order:
                    for scenario, script in scripts.items():
                        run = one_run(checkout, redis.url, f"cmp{r}{name}{scenario}", script, args.seconds)
                        results.setdefault((name, scenario), []).append(run)
                        print(f"round {r} {name:10s} {scenario:4s} {run[0]:8.0f} req/s  {run[1]:5.0f} us CPU/request")
        finally:
            redis.stop()
    (first, _), (second, _) = variants.items()
    for scenario in scripts:
        a, b = results[(first, scenario)], results[(second, scenario)]
        rps_a, rps_b = statistics.median(x[0] for x in a), statistics.median(x[0] for x in b)
        cpu_a, cpu_b = statistics.median(x[1] for x in a), statistics.median(x[1] for x in b)
        print(
            f"{scenario}: {first} {rps_a:.0f} req/s, {second} {rps_b:.0f} req/s ({rps_b / rps_a:.3f}x); "
            f"CPU per request {cpu_a:.0f} vs {cpu_b:.0f} us ({cpu_b / cpu_a:.3f}x)"
        )


def _variant(spec: str) -> Path:
    """A checkout's path, or an anchor's name kept as it is (app:raw, app:ceiling)."""
    return Path(spec) if spec.startswith("app:") else Path(spec.removesuffix(":cluster")).resolve()


if __name__ == "__main__":
    main()
