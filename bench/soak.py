"""`make soak`: a long run at a fixed fraction of capacity, sampling the server's memory and file
descriptors, to show they stay flat. Writes docs/soak.md and docs/soak.png.

Capacity is measured first (a short closed-loop run of the same traffic); the soak then offers
FRACTION of it with k6's constant-arrival-rate executor. Traffic: one row per request, half of the
requests repeat a warmed pool, half send a row never sent before, so the in-process tier fills to
its bound and must stop growing there.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from run import BIN, K6, ROOT, Process, Target, machine, run_k6, start_redis, warm

from housing_api.config import Settings

# Soak what a deployment runs: the service's own default, not a number of this script's.
MEMORY_CACHE_ROWS = Settings.model_fields["memory_cache_rows"].default

Sample = tuple[float, float, int, int]
"""(seconds since start, RSS MB, open fds, rows in the in-process tier)."""


def sample(pid: int, url: str) -> tuple[float, int, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    text = httpx.get(url + "/metrics", timeout=5).text
    found = re.search(r"^housing_api_memory_cache_rows(?:\{[^}]*\})? (\S+)$", text, re.M)
    rows = int(float(found.group(1))) if found else 0
    return rss / 1024, len(os.listdir(f"/proc/{pid}/fd")), rows


def sampler(pid: int, url: str, every_s: float, out: list[Sample], stop: threading.Event) -> None:
    started = time.monotonic()
    while not stop.wait(every_s):
        rss, fds, rows = sample(pid, url)
        out.append((time.monotonic() - started, rss, fds, rows))


def warm_index(samples: list[Sample], capacity_rows: int) -> int:
    """First sample once the in-process tier is full (it grows by design up to its bound);
    20% into the run if it never fills."""
    full = next((i for i, s in enumerate(samples) if s[3] >= capacity_rows * 0.99), None)
    return full if full is not None and full < len(samples) * 0.8 else len(samples) // 5


def growth(samples: list[Sample], index: int, capacity_rows: int) -> float:
    """Mean of the last tenth of the run against the tenth right after warm-up."""
    n = max(len(samples) // 10, 1)
    first_index = warm_index(samples, capacity_rows)
    start = samples[first_index : first_index + n]
    end = samples[-n:]
    first = sum(s[index] for s in start) / len(start)
    last = sum(s[index] for s in end) / len(end)
    return (last - first) / first


def write_report(
    samples: list[Sample], capacity_rows: int, rate: float, capacity: float, duration: str, result: dict, command: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s[0] / 60 for s in samples]
    warm_s = samples[warm_index(samples, capacity_rows)][0]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    a.plot(t, [s[1] for s in samples])
    a.set(title="resident memory", xlabel="minutes", ylabel="MB", ylim=(0, max(s[1] for s in samples) * 1.2))
    a.axvline(warm_s / 60, color="gray", linestyle=":", label="in-process tier full")
    a.legend(loc="lower right")
    b.plot(t, [s[2] for s in samples], color="tab:orange")
    b.set(title="open file descriptors", xlabel="minutes", ylim=(0, max(s[2] for s in samples) * 1.5))
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "soak.png", dpi=100)
    rows = "\n".join(f"| {s[0]:.0f} | {s[1]:.1f} | {s[2]} | {s[3]:,} |" for s in samples[:: max(len(samples) // 20, 1)])
    d = result["http_req_duration"]["values"]
    (ROOT / "docs" / "soak.md").write_text(
        f"""# Soak: memory and file descriptors under sustained load

Command: `{command}`

Machine: {machine()}

- Capacity measured first (closed loop, 32 connections, same traffic): **{capacity:,.0f} requests/s**.
- Offered for {duration}: **{rate:,.0f} requests/s** ({rate / capacity:.0%} of capacity), one row per
  request, half repeating a warmed pool, half never sent before. Redis on.
- Achieved {result["http_reqs"]["values"]["rate"]:,.0f} requests/s; p50 {d["med"]:.2f} ms, p99 {d["p(99)"]:.2f} ms;
  failed {result["http_req_failed"]["values"]["rate"]:.2%}.
- **Resident memory growth: {growth(samples, 1, capacity_rows):+.1%}**, open file descriptors growth:
  {growth(samples, 2, capacity_rows):+.1%}. Target: under 10%. Measured as the mean of the last tenth
  of the run against the tenth that starts at {warm_s:.0f} s, when the in-process tier had filled to
  its bound ({capacity_rows:,} rows; it grows by design until then, and not after).

![memory and fds](soak.png)

| seconds | RSS MB | open fds | rows in the in-process tier |
|---:|---:|---:|---:|
{rows}
"""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", default="10m")
    parser.add_argument("--fraction", type=float, default=0.7)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument(
        "--memory-rows",
        type=int,
        default=MEMORY_CACHE_ROWS,
        help="MEMORY_CACHE_ROWS of the soaked server (default: the service's)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        redis_proc, redis_url = start_redis(tmp)
        env = {
            "MEMORY_CACHE_ROWS": str(args.memory_rows),
            "REDIS_URL": redis_url,
            "MODEL_PATH": str(ROOT / "model" / "model.joblib"),
            "LOG_LEVEL": "warning",
        }
        server = Process(Target("service", [str(BIN / "housing-api"), "serve", "--port", "{port}"], env))
        try:
            warm(server.url, 64)
            capacity = run_k6(server.url, {"MODE": "half"}, "15s", tmp, 1)["http_reqs"]["values"]["rate"]
            rate = capacity * args.fraction
            samples: list[Sample] = []
            stop = threading.Event()
            thread = threading.Thread(
                target=sampler, args=(server.proc.pid, server.url, args.every, samples, stop), daemon=True
            )
            thread.start()
            result = run_k6(
                server.url, {"MODE": "half", "EXECUTOR": "rate", "RATE": str(int(rate))}, args.duration, tmp, 2
            )
            stop.set()
            thread.join()
        finally:
            server.stop()
            redis_proc.terminate()
    command = "make soak" + ("" if args.duration == "10m" else f" SOAK_DURATION={args.duration}")
    write_report(samples, args.memory_rows, rate, capacity, args.duration, result, command)
    print((ROOT / "docs" / "soak.md").read_text())


if __name__ == "__main__":
    subprocess.run([str(K6), "version"], check=True, capture_output=True)
    main()
