"""Start-up time and memory of `housing-api serve`: spawn to the first 200 on /readyz, then VmRSS.

    .venv/bin/python bench/startup.py [--runs 5] [--variant NAME=CHECKOUT ...]

Each variant is a checkout (its src/ with the C extension built, and its model/); the default is
this one. Runs alternate between variants, so load from other processes on a shared machine falls
on all of them alike; the CPU seconds the server used until ready are printed too, since they
depend much less on that load than the wall-clock time. The service runs without Redis, as
`make run` does.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    # utime and stime, fields 14 and 15 of /proc/<pid>/stat (the name in field 2 has no spaces here).
    fields = Path(f"/proc/{pid}/stat").read_text().split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


class Run(NamedTuple):
    seconds: float
    cpu_seconds: float
    rss_mb: float


def one_run(checkout: Path, timeout: float = 120) -> Run:
    """From spawn to the first 200 on /readyz: seconds, CPU seconds, and VmRSS (MB) then."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(checkout / "src"),
        "MODEL_PATH": str(checkout / "model" / "model.joblib"),
        "LOG_LEVEL": "warning",
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "housing_api", "serve", "--port", str(port)],
        env=env, cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while not ready(port):
            if proc.poll() is not None or time.perf_counter() - started > timeout:
                raise RuntimeError(f"{checkout}: server exited or never became ready")
            time.sleep(0.01)
        return Run(time.perf_counter() - started, cpu_seconds(proc.pid), vm_rss_mb(proc.pid))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--variant", action="append", default=[], help="NAME=CHECKOUT (repeatable)")
    args = parser.parse_args()
    variants = dict(v.split("=", 1) for v in args.variant) or {"this": str(ROOT)}
    results: dict[str, list[Run]] = {name: [] for name in variants}
    for i in range(args.runs):
        for name, checkout in variants.items():
            run = one_run(Path(checkout).resolve())
            results[name].append(run)
            print(
                f"run {i + 1} {name:>10}: ready in {run.seconds:5.2f} s ({run.cpu_seconds:5.2f} s CPU), "
                f"VmRSS {run.rss_mb:6.1f} MB",
                flush=True,
            )
    for name, runs in results.items():
        print(f"{name:>10}: median of {len(runs)}: " + ", ".join(summary(runs, field) for field in Run._fields))


def summary(runs: list[Run], field: str) -> str:
    values = sorted(getattr(r, field) for r in runs)
    return f"{field} {statistics.median(values):.2f} (min {values[0]:.2f}, max {values[-1]:.2f})"


if __name__ == "__main__":
    main()
