"""`make capacity`: the numbers behind docs/capacity.md, measured together in one run.

1. Per-pod throughput: the built image (conftest's podman build, scripts/image-build.sh) in podman
   with `--cpus` = the API container's CPU request in the manifests and one worker, its Redis a
   throwaway redis-server. k6 (bench/k6/bench.js) first finds the saturated rate with a closed loop,
   then runs open-loop steps below it; a pod's capacity is the highest step answered in full
   (>= 97 % of the offered rate, no failure) with p99 <= --p99-ms. Once for cache hits, once for misses.
2. Redis memory per cached row: 100,000 distinct rows through the service; INFO memory before and
   after, and MEMORY USAGE of a sample of keys.
3. Redis commands per request at cache rates 0, 0.5 and 0.9, with the in-process tier off (every
   lookup reaches Redis: the worst case, a fleet large enough that a pod rarely sees a row twice).
4. This Redis's own ceiling on this machine (redis-benchmark GET/SET).
Then it writes docs/capacity.md (--write) with the extrapolated table. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
from housing_api_testing.harness import RedisServer, free_port, podman_env, wait_until  # noqa: E402

K6 = Path(sys.executable).parent / "k6"
BENCH_JS = ROOT / "bench" / "k6" / "bench.js"
CACHE_RATES = (0.0, 0.5, 0.9)
LOADS = (1_000, 10_000, 100_000)
HPA_TARGET = 0.70  # .k8s/base/api-hpa.yaml: averageUtilization of the CPU request
TTL_S = 3600  # CACHE_TTL_SECONDS in the base ConfigMap
MEMORY_ROWS = 100_000


def manifest_numbers() -> dict[str, Any]:
    deployment = yaml.safe_load((ROOT / ".k8s/base/api-deployment.yaml").read_text())
    api = deployment["spec"]["template"]["spec"]["containers"][0]
    cpu = api["resources"]["requests"]["cpu"]
    hpa = yaml.safe_load((ROOT / ".k8s/overlays/prod/patch-hpa.yaml").read_text())["spec"]
    return {
        "cpu_request": float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu),
        "min_replicas": hpa["minReplicas"],
        "max_replicas": hpa["maxReplicas"],
    }


def uptime() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def build_image(env: dict[str, str]) -> str:
    image = "localhost/housing-api:capacity"
    out = subprocess.run([str(ROOT / "scripts/image-build.sh"), image], env={**env, "ENGINE": "podman"},
                         capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0:
        sys.exit(f"image build failed:\n{out.stderr[-3000:]}")
    print(out.stdout.strip().splitlines()[-1], flush=True)
    return image


class Pod:
    """The image under a CPU quota, on the host network (no NAT in the measurement), its own port."""

    def __init__(self, image: str, env: dict[str, str], cpus: float, redis_url: str, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        extra = [a for k, v in settings.items() for a in ("-e", f"{k}={v}")]
        argv = ["podman", "run", "-d", "--network", "host", "--cpus", str(cpus), "--memory", "1g",
                "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp", "--no-healthcheck",
                "-e", f"REDIS_URL={redis_url}", *extra, image,
                "housing-api", "serve", "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        self.id = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout.strip()
        ok = wait_until(lambda: httpx.get(self.url + "/readyz", timeout=1).json().get("cache") == "ok", 60, 0.1)
        if not ok:
            self.stop()
            sys.exit("the service container did not become ready with its Redis")
        inspect = ["podman", "inspect", "--format", "{{.State.Pid}}", self.id]
        self.pid = int(subprocess.run(inspect, env=env, capture_output=True, text=True, check=True).stdout)

    def cpu_seconds(self) -> float:
        """CPU time of the server process (PID 1 in the container, every thread), user + system."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        subprocess.run(["podman", "rm", "-f", "-t", "10", self.id], env=self.env, capture_output=True)


def k6(pod: Pod, tmp: Path, seed: int, duration: str, **scenario: str) -> dict[str, float]:
    summary = tmp / f"k6-{seed}.json"
    env = {**os.environ, "BASE_URL": pod.url, "DURATION": duration, "SUMMARY": str(summary), "SEED": str(seed),
           **scenario}  # fmt: skip
    cpu = pod.cpu_seconds()
    subprocess.run([str(K6), "run", "-q", "--address", "", str(BENCH_JS)], env=env, capture_output=True)
    cpu = pod.cpu_seconds() - cpu
    m = json.loads(summary.read_text())["metrics"]
    return {
        "cpu_ms_per_request": 1000 * cpu / m["http_reqs"]["values"]["count"],
        "rps": m["http_reqs"]["values"]["rate"],
        "p99_ms": m["http_req_duration"]["values"]["p(99)"],
        "p50_ms": m["http_req_duration"]["values"]["med"],
        "failed": m["http_req_failed"]["values"]["rate"],
    }


def warm_pool(url: str) -> None:
    """bench.js's hit rows are pool(i) = row(i % 64, 999): send them once."""
    env = {**os.environ, "BASE_URL": url, "MODE": "hits", "BATCH_SIZE": "64", "SUMMARY": os.devnull}
    subprocess.run([str(K6), "run", "-q", "--address", "", "--iterations", "1", "--vus", "1", str(BENCH_JS)],
                   env=env, capture_output=True, check=True)  # fmt: skip


def capacities(pod: Pod, p99_ms: float, tmp: Path, duration: str, cpu_request: float) -> dict[str, dict[str, Any]]:
    """Hits and misses, their open-loop steps interleaved so that a change in the machine's load
    (it is shared) falls on both alike."""
    out: dict[str, dict[str, Any]] = {}
    for mode, seed in (("hits", 100), ("misses", 200)):
        out[mode] = {"saturated": k6(pod, tmp, seed, "8s", MODE=mode, VUS="16"), "steps": []}
    for i, fraction in enumerate((0.3, 0.4, 0.5, 0.6, 0.7, 0.8)):
        for mode, seed in (("hits", 100), ("misses", 200)):
            rate = max(10, int(out[mode]["saturated"]["rps"] * fraction))
            r = k6(pod, tmp, seed + 1 + i, duration, MODE=mode, EXECUTOR="rate", RATE=str(rate), MAX_VUS="200")
            out[mode]["steps"].append({"offered": rate, **r})
            print(f"  {mode}: offered {rate}/s -> {r['rps']:.0f}/s, p99 {r['p99_ms']:.1f} ms, "
                  f"failed {r['failed']:.3f}, {r['cpu_ms_per_request']:.2f} CPU ms/request", flush=True)  # fmt: skip
    for result in out.values():
        steps = result["steps"]
        good = [s for s in steps if s["failed"] == 0 and s["rps"] >= 0.97 * s["offered"] and s["p99_ms"] <= p99_ms]
        result["capacity_rps"] = max(s["rps"] for s in good) if good else None
    derive(out, cpu_request)
    return out


def derive(out: dict[str, Any], cpu_request: float) -> None:
    """What the CPU request buys, from the CPU time a request costs: robust to a shared machine's
    neighbours, which stretch latency but hardly change the CPU a request costs. The median of the
    open-loop steps (little queueing, so little micro-batching): the conservative figure. At
    saturation requests share model calls and Redis round trips, and cost less (also reported)."""
    for mode in ("hits", "misses"):
        costs = sorted(s["cpu_ms_per_request"] for s in out[mode]["steps"])
        median = (costs[(len(costs) - 1) // 2] + costs[len(costs) // 2]) / 2
        out[mode]["cpu_ms_per_request"] = median
        out[mode]["cpu_capacity_rps"] = cpu_request * 1000 / median
        out[mode]["cpu_capacity_rps_saturated"] = cpu_request * 1000 / out[mode]["saturated"]["cpu_ms_per_request"]


def redis_memory_per_row(url: str, redis: RedisServer) -> dict[str, float]:
    client = redis.client()
    before_keys, before = client.dbsize(), client.info("memory")["used_memory"]
    rng = random.Random(16)
    sent = 0
    with httpx.Client(base_url=url, timeout=60) as http:
        # Until 100,000 rows are in Redis: the pod writes behind its answers and, at its CPU
        # request, drops writes it cannot keep up with, so send, let them land, and send more.
        while client.dbsize() - before_keys < MEMORY_ROWS:
            need = min(1000, MEMORY_ROWS - (client.dbsize() - before_keys))
            rows = [{"MedInc": 1 + rng.random() * 10, "HouseAge": rng.randint(1, 52), "AveRooms": 3 + rng.random() * 4,
                     "AveBedrms": 1 + rng.random() / 5, "Population": 100 + sent + i, "AveOccup": 2 + rng.random(),
                     "Latitude": 33 + rng.random() * 8, "Longitude": -124 + rng.random() * 9} for i in range(need)]  # fmt: skip
            sent += need
            target = client.dbsize() + need
            while (r := http.post("/predict", json=rows)).status_code == 429:
                time.sleep(0.5)
            r.raise_for_status()
            wait_until(lambda t=target: client.dbsize() >= t, 5, 0.05)
    rows_added = client.dbsize() - before_keys
    after = client.info("memory")["used_memory"]
    keys = [k for _, k in zip(range(1000), client.scan_iter(count=1000), strict=False)]
    usage = [client.memory_usage(k, samples=0) for k in keys]
    return {
        "rows": rows_added,
        "used_memory_delta": after - before,
        "bytes_per_row_info": (after - before) / rows_added,
        "bytes_per_row_memory_usage": sum(usage) / len(usage),
        "used_memory_human": client.info("memory")["used_memory_human"],
    }


def command_calls(redis: RedisServer) -> int:
    stats = redis.client().info("commandstats")
    own = ("info", "memory", "dbsize", "scan")  # this script's probes, not the service's commands
    return sum(v["calls"] for k, v in stats.items() if k.removeprefix("cmdstat_") not in own)


def commands_per_request(url: str, redis: RedisServer, requests: int = 400) -> dict[str, dict[str, float]]:
    """Single-row requests from 4 concurrent clients; a share `rate` of them repeat a warmed pool."""
    pool = [{"MedInc": 2 + i / 100, "HouseAge": 30, "AveRooms": 5, "AveBedrms": 1, "Population": 900 + i,
             "AveOccup": 3, "Latitude": 36, "Longitude": -120} for i in range(100)]  # fmt: skip
    httpx.post(url + "/predict", json=pool, timeout=30).raise_for_status()
    client = redis.client()
    wait_until(lambda: sum(1 for _ in client.scan_iter("housing:*", count=1000)) >= len(pool), 10)
    out: dict[str, dict[str, float]] = {}
    fresh = iter(range(10**9))
    for rate in CACHE_RATES:
        rng = random.Random(int(rate * 100))
        batches = [[rng.choice(pool)] if rng.random() < rate else
                   [{**pool[0], "MedInc": 50 + next(fresh) / 1e4, "HouseAge": 7}] for _ in range(requests)]  # fmt: skip
        time.sleep(1)  # let the previous writes land
        before = command_calls(redis)
        with httpx.Client(base_url=url, timeout=30) as http, ThreadPoolExecutor(4) as threads:
            caches = list(threads.map(lambda b: http.post("/predict", json=b).headers["x-cache"], batches))
        time.sleep(1)
        calls = command_calls(redis) - before
        out[str(rate)] = {"per_request": calls / requests, "hit_share": caches.count("HIT") / requests}
        print(f"  cache rate {rate}: {calls / requests:.2f} Redis commands per request "
              f"({caches.count('HIT') / requests:.2f} answered from cache)", flush=True)  # fmt: skip
    return out


def redis_ceiling(redis: RedisServer) -> dict[str, float]:
    out = subprocess.run(["redis-benchmark", "-p", str(redis.port), "-t", "get,set", "-n", "200000", "-c", "50", "-q"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    result = {}
    for line in out.replace("\r", "\n").splitlines():
        if "requests per second" in line:
            name, rest = line.split(":", 1)
            result[name.strip()] = float(rest.split()[0])
    return result


def table(n: dict[str, Any]) -> str:
    hit, miss = n["hits"]["cpu_capacity_rps"], n["misses"]["cpu_capacity_rps"]
    lines = ["| load | cache rate | per-pod capacity | pods at 70 % CPU | Redis commands/s | Redis memory (rows kept for the TTL) |",
             "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for load in LOADS:
        for rate in CACHE_RATES:
            per_pod = 1 / (rate / hit + (1 - rate) / miss)
            pods = math.ceil(load / (HPA_TARGET * per_pod))
            ops = load * n["commands"][str(rate)]["per_request"]
            rows = load * (1 - rate) * TTL_S
            gb = rows * n["memory"]["bytes_per_row_info"] / 1e9
            lines.append(f"| {load:,} req/s | {rate} | {per_pod:,.0f} req/s | {pods:,} | {ops:,.0f} | "
                         f"{rows / 1e6:,.1f} M rows, {gb:,.1f} GB |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p99-ms", type=float, default=50.0, help="the latency SLO a pod's capacity must meet")
    parser.add_argument("--duration", default="10s", help="each open-loop step")
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "capacity.json")
    parser.add_argument("--from-json", action="store_true", help="derive the table again from --json, measure nothing")
    args = parser.parse_args()
    if args.from_json:
        numbers = json.loads(args.json.read_text())
        derive(numbers, numbers["manifest"]["cpu_request"])
        args.json.write_text(json.dumps(numbers, indent=1))
        report(numbers, args.p99_ms)
        return
    env = podman_env()
    image = build_image(env)
    manifest = manifest_numbers()
    numbers: dict[str, Any] = {"load_before": uptime(), "manifest": manifest, "p99_ms": args.p99_ms,
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = RedisServer(tmp).start()
        pod = Pod(image, env, manifest["cpu_request"], redis.url)
        try:
            warm_pool(pod.url)
            print(f"per-pod throughput (--cpus {manifest['cpu_request']}), p99 <= {args.p99_ms} ms:", flush=True)
            numbers.update(capacities(pod, args.p99_ms, tmp, args.duration, manifest["cpu_request"]))
            print("Redis memory per row:", flush=True)
            numbers["memory"] = redis_memory_per_row(pod.url, redis)
            print(f"  {numbers['memory']}", flush=True)
        finally:
            pod.stop()
        redis.stop()
        redis = RedisServer(tmp).start()
        pod = Pod(image, env, manifest["cpu_request"], redis.url, MEMORY_CACHE_ROWS="0")
        try:
            print("Redis commands per request (in-process tier off):", flush=True)
            numbers["commands"] = commands_per_request(pod.url, redis)
        finally:
            pod.stop()
        numbers["redis_ceiling"] = redis_ceiling(redis)
        print(f"redis-benchmark: {numbers['redis_ceiling']}", flush=True)
        redis.stop()
    numbers["load_after"] = uptime()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(numbers, indent=1))
    print(f"wrote {args.json}\n")
    report(numbers, args.p99_ms)


def report(numbers: dict[str, Any], p99_ms: float) -> None:
    for mode in ("hits", "misses"):
        m = numbers[mode]
        print(f"{mode}: {m['cpu_ms_per_request']:.2f} CPU ms/request -> {m['cpu_capacity_rps']:.0f} req/s per pod "
              f"({m['cpu_capacity_rps_saturated']:.0f} at saturation); within p99 <= {p99_ms} ms here: "
              f"{m['capacity_rps']}")  # fmt: skip
    print(table(numbers))


if __name__ == "__main__":
    main()
