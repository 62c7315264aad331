"""Two checkouts of the service side by side under wrk: one-row hits and misses, alternating rounds.

    .venv/bin/python bench/compare_checkouts.py before=/path/to/old/checkout after=. [--rounds 4 --seconds 6]

Each checkout needs its C extension built in its src/ (`make install` there). For a change of the
request path (issue 10's rule: hits and misses may not drop by more than 5%). Every round starts
each checkout's service in turn against one throwaway redis-server, warms it for 2 s, then runs
wrk (1 thread, 32 connections) for --seconds. Besides requests/s it reports the server's CPU time
per request, read from /proc, which depends much less on what else the machine runs than
throughput does. Medians over the rounds.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from harness import RedisServer, ServiceProcess  # noqa: E402  (the one process harness)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", nargs=2, help="NAME=PATH, twice")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", default="6s")
    args = parser.parse_args()
    variants = {name: Path(path).resolve() for name, path in (c.split("=", 1) for c in args.checkouts)}
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


if __name__ == "__main__":
    main()
