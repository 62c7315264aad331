"""What grows in one service process as it ages under `make bench`'s batch traffic (issue 26).

    .venv/bin/python bench/age.py [--requests 30000 --every 3000]

One redis-server and one service process (housing_api_testing.harness); 100-row half-repeated batches (the
batch scenario's mix: 50 rows every request has, 50 no request sent before) sent one after another
on one connection, so the numbers are counts, not timings, and a busy machine does not move them.
Every --every requests it prints what could make a later request cost more than an earlier one:
the service's RSS and its Python heap (allocated blocks), the number of metric series it exports,
its in-process tier's rows, the cyclic collector's collections per generation, and Redis' keys,
memory, and over each window the server's own microseconds per call of the two commands the batch
path sends (MGET and EVALSHA, from INFO commandstats) and its CPU time per request (INFO cpu). A
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import http.client
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from compare_checkouts import batch_body  # noqa: E402  (beside this file)

from housing_api_testing.harness import RedisServer, ServiceProcess  # noqa: E402  (the one process harness)

GC_SERIES = 'python_gc_collections_total{generation="%d"}'
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", re.MULTILINE)


def scrape(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    samples = {name + labels: float(value) for name, labels, value in SAMPLE.findall(text)}
    samples["series"] = len(samples)
    return samples


def redis_stats(client: object) -> dict[str, float]:
    """Keys, memory, and the server's cumulative CPU seconds and calls and microseconds per command."""
    info = client.info("all")  # type: ignore[attr-defined]
    stats = {"keys": float(client.dbsize()), "used_mb": info["used_memory"] / 2**20,  # type: ignore[attr-defined]
             "cpu_s": info["used_cpu_user"] + info["used_cpu_sys"]}  # fmt: skip
    for command in ("mget", "evalsha"):
        found = info.get(f"cmdstat_{command}", {"calls": 0, "usec": 0})
        stats[f"{command}_calls"], stats[f"{command}_usec"] = found["calls"], found["usec"]
    return stats


def window(now: dict[str, float], before: dict[str, float], requests: int) -> tuple[float, float, float]:
    """Redis' own microseconds per MGET and per EVALSHA, and its CPU microseconds per request,
    over the requests since `before` (not since it started, as usec_per_call is)."""

    def per_call(command: str) -> float:
        calls = now[f"{command}_calls"] - before[f"{command}_calls"]
        return (now[f"{command}_usec"] - before[f"{command}_usec"]) / calls if calls else 0.0

    return per_call("mget"), per_call("evalsha"), (now["cpu_s"] - before["cpu_s"]) * 1e6 / max(requests, 1)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--every", type=int, default=3_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp)).start()
        service = ServiceProcess({"REDIS_URL": redis.url, "LOG_LEVEL": "warning", "CACHE_PREFIX": "age"}).start()
        client = redis.client()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
            print("requests  rss_mb  series  memory_rows  gc_gen0/1/2      redis_keys  redis_mb  mget_us  evalsha_us"
                  "  redis_cpu_us/request")  # fmt: skip
            before = redis_stats(client)
            for n in range(args.requests + 1):
                if n % args.every == 0:
                    m, r = scrape(service.port), redis_stats(client)
                    gc = "/".join(f"{m.get(GC_SERIES % g, 0):.0f}" for g in range(3))
                    mget_us, evalsha_us, cpu_us = window(r, before, args.every)
                    before = r
                    row = (n, rss_mb(service.pid), m["series"], m.get("housing_api_memory_cache_rows", 0), gc,
                           r["keys"], r["used_mb"], mget_us, evalsha_us, cpu_us)  # fmt: skip
                    line = "{:8d} {:7.1f} {:7.0f} {:12.0f}  {:15s} {:10.0f} {:9.1f} {:8.2f} {:11.2f} {:12.1f}"
                    print(line.format(*row), flush=True)
                conn.request("POST", "/predict", batch_body(n), {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                assert response.status == 200, response.status
        finally:
            client.close()
            service.stop()
            redis.stop()


if __name__ == "__main__":
    main()
