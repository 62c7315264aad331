"""Render the Grafana dashboard's service panels from real data into a PNG (`make dashboard-png`).

Starts a throwaway redis-server, `housing-api serve` and Prometheus (the same helpers the tests
use, housing_api_testing/prom.py), sends a short mixed load (cache hits in every tier, new rows for the model,
some invalid batches), then evaluates every service panel's queries over the load through
Prometheus's query_range API and draws them as a grid of small charts with the panels' titles,
units and threshold lines. For people without a Grafana at hand; the Kubernetes panels need a
cluster and are left out.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

import httpx  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from housing_api.schemas import SAMPLE_BATCH  # noqa: E402
from housing_api_testing.harness import RedisServer, ServiceProcess  # noqa: E402
from housing_api_testing.prom import Prometheus, is_k8s_only, load_dashboard, panels, prometheus_binary, render  # noqa: E402

STEP_S = 2.0
VARIABLES = {"__rate_interval": "10s", "job": ".+", "namespace": ".*"}
COLORS = {"2xx": "tab:green", "4xx": "tab:orange", "5xx": "tab:red", "model": "tab:purple", "redis": "tab:red",
          "memory": "tab:green", "http": "tab:blue"}  # fmt: skip


# --- load ----------------------------------------------------------------------------------------


def _row(i: int) -> dict[str, float]:
    """Row i: the same i gives the same row (and cache key), different i a different row."""
    return {**SAMPLE_BATCH[i % 4], "MedInc": 1 + (i % 997) / 100, "Population": float(i)}


def _target_rps(elapsed: float, duration: float) -> float:
    """A ramp up, a peak and a quieter tail, so the charts show the service responding to load."""
    phase = elapsed / duration
    return 30 + 170 * math.sin(math.pi * min(phase * 1.4, 1.0)) ** 2


async def _one(client: httpx.AsyncClient, rng: random.Random, fresh: list[int]) -> None:
    pick = rng.random()
    if pick < 0.45:  # popular batches: in-process hits
        await client.post("/predict", json=[_row(rng.randrange(200)) for _ in range(rng.randint(1, 8))])
    elif pick < 0.75:  # a long tail bigger than the LRU: Redis hits once seen
        await client.post("/predict", json=[_row(rng.randrange(200, 4000)) for _ in range(rng.randint(5, 40))])
    elif pick < 0.85:  # rows never seen: the model
        fresh[0] += 1
        await client.post("/predict", json=[_row(10_000 + fresh[0] * 50 + k) for k in range(rng.randint(1, 50))])
    elif pick < 0.97:  # single rows over GET: the HTTP response cache
        await client.get("/predict", params=_row(rng.randrange(50)))
    else:  # an invalid batch: 422
        await client.post("/predict", json=[{**SAMPLE_BATCH[0], "MedInc": -1}])


async def load(url: str, duration: float, workers: int = 16, seed: int = 7) -> None:
    rng = random.Random(seed)
    fresh = [0]
    started = time.monotonic()

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while (elapsed := time.monotonic() - started) < duration:
                await _one(client, rng, fresh)
                await asyncio.sleep(rng.expovariate(_target_rps(elapsed, duration) / workers))

    await asyncio.gather(*(worker() for _ in range(workers)))


# --- drawing -------------------------------------------------------------------------------------


def _formatter(unit: str) -> tuple[FuncFormatter, str]:
    """A tick formatter and an axis label for a Grafana unit."""
    if unit == "s":
        return FuncFormatter(lambda v, _: f"{v * 1000:g}"), "ms"
    if unit == "percentunit":
        return FuncFormatter(lambda v, _: f"{v * 100:.3g}"), "%"
    if unit == "bytes":
        return FuncFormatter(lambda v, _: f"{v / 1024:.3g}"), "KiB"
    label = unit.removeprefix("suffix:").strip() if unit.startswith("suffix:") else {"reqps": "req/s"}.get(unit, "")
    return FuncFormatter(lambda v, _: f"{v:g}"), label


def _legend(fmt: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), fmt).strip() or "value"


Line = tuple[str, list[float], list[float]]


def _series(prom: Prometheus, panel: dict[str, Any], start: float, end: float) -> list[Line]:
    """(legend, seconds into the load, values) per result series, on one shared time axis
    (a series that appears later, such as the first 4xx, is NaN before it exists)."""
    raw = []
    for target in (t for t in panel["targets"] if not is_k8s_only(t["expr"])):  # no cluster here
        for result in prom.query_range(render(target["expr"], VARIABLES), start, end, STEP_S):
            points = {float(t): float(v) for t, v in result["values"]}
            raw.append((_legend(target.get("legendFormat", ""), result["metric"]), points))
    times = sorted({t for _, points in raw for t in points})
    return [(name, [t - start for t in times], [points.get(t, math.nan) for t in times]) for name, points in raw]


def _thresholds(panel: dict[str, Any]) -> list[float]:
    defaults = panel["fieldConfig"]["defaults"]
    if defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode", "off") == "off":
        return []
    return [s["value"] for s in defaults["thresholds"]["steps"] if s["value"] is not None]


def _draw_timeseries(ax: Axes, panel: dict[str, Any], lines: list[Line]) -> None:
    formatter, unit_label = _formatter(panel["fieldConfig"]["defaults"]["unit"])
    stacked = panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    visible = [line for line in lines if any(math.isfinite(y) for y in line[2])]
    if stacked and visible:
        ys = [[y if math.isfinite(y) else 0.0 for y in line[2]] for line in visible]
        names = [line[0] for line in visible]
        colors = [COLORS.get(n, f"C{i}") for i, n in enumerate(names)]
        ax.stackplot(visible[0][1], ys, labels=names, colors=colors, alpha=0.8)
    else:
        for i, (name, xs, ys) in enumerate(visible):
            ax.plot(xs, ys, label=name, color=COLORS.get(name, f"C{i}"), linewidth=1.6)
    for value in _thresholds(panel):
        if not visible or value <= 3 * max(max(y for y in line[2] if math.isfinite(y)) for line in visible):
            ax.axhline(value, color="red", linestyle="--", linewidth=1.2)
    ax.yaxis.set_major_formatter(formatter)
    ax.set_ylabel(unit_label, fontsize=8)
    ax.set_ylim(bottom=0)
    if visible:
        ax.legend(fontsize=7, loc="upper left", ncol=2, framealpha=0.6)


def _draw_stats(ax: Axes, stats: list[tuple[str, list[Line]]]) -> None:
    """The stat panels side by side: last value, big, with the panel title and series name."""
    ax.axis("off")
    for i, (title, lines) in enumerate(stats):
        x = (i + 0.5) / len(stats)
        name, _, ys = lines[0] if lines else ("no data", [], [])
        value = next((y for y in reversed(ys) if math.isfinite(y)), math.nan)
        ax.text(x, 0.85, title, ha="center", va="center", fontsize=10, weight="bold", wrap=True)
        ax.text(x, 0.5, f"{value:g}", ha="center", va="center", fontsize=30, weight="bold", color="tab:green")
        ax.text(x, 0.2, name, ha="center", va="center", fontsize=9, color="dimgray")


def draw(prom: Prometheus, start: float, end: float, out: Path, provenance: str) -> None:
    # Every panel with at least one query of the service's own metrics (Kubernetes ones are left out).
    service = [p for p in panels(load_dashboard()) if not all(is_k8s_only(t["expr"]) for t in p["targets"])]
    charts = [p for p in service if p["type"] != "stat"]
    stats = [(p["title"], _series(prom, p, start, end)) for p in service if p["type"] == "stat"]
    cols = 3
    # The stat panels share what is left of the last row, or a row of their own if under two cells.
    spare = -len(charts) % cols
    rows = math.ceil(len(charts) / cols) + (0 if spare >= 2 else 1)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 6, rows * 3.1))
    cells = list(axes.flat)
    for ax, panel in zip(cells, charts, strict=False):
        ax.set_title(panel["title"], fontsize=10, loc="left", weight="bold")
        _draw_timeseries(ax, panel, _series(prom, panel, start, end))
        ax.set_xlabel("seconds into the load", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    # The stat panels share what is left of the last row.
    for ax in cells[len(charts) :]:
        ax.remove()
    first_free = cols - spare if spare >= 2 else 0
    _draw_stats(fig.add_subplot(axes[0, 0].get_gridspec()[rows - 1, first_free:]), stats)
    fig.suptitle(
        "housing-api dashboard: the service panels after a short local load (red dashed lines: SLO and limits)\n"
        + "\n".join(textwrap.wrap(provenance, 150)),
        fontsize=12, weight="bold",
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


def provenance(seconds: float, loadavg: str, note: str) -> str:
    """Which commit and settings drew the picture, and how busy the machine was."""
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    commit = git("rev-parse", "--short", "HEAD") or "?"
    if git("status", "--porcelain", "--", ".", ":!docs/dashboard.png", ":!docs/loadtest"):
        commit += " plus uncommitted changes"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (
        f"commit {commit}, {when}, `make dashboard-png` ({seconds:g} s of mixed load; REDIS_URL, "
        f"MEMORY_CACHE_ROWS=2000, OMP_NUM_THREADS=1, other settings default), {os.cpu_count()} cores, "
        f"load average {loadavg} before the load" + (f"; {note}" if note else "")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--seconds", type=float, default=45.0, help="length of the load")
    parser.add_argument("--note", default="", help="a line for the picture's title, e.g. that the machine was shared")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dashboard-png-") as tmp:
        redis = RedisServer(Path(tmp)).start()
        # One OpenMP thread, as in a pod (the prod ConfigMap sets it): the load shares these cores.
        server = ServiceProcess({"REDIS_URL": redis.url, "MEMORY_CACHE_ROWS": "2000", "OMP_NUM_THREADS": "1"})
        server.spawn()  # starts while Prometheus does; wait_ready below
        prom = Prometheus(prometheus_binary(), Path(tmp), [f"127.0.0.1:{server.port}"])
        try:
            prom.start()
            server.wait_ready(timeout_s=60)
            if not prom.wait_for_targets():
                raise RuntimeError("Prometheus cannot scrape the service")
            loadavg = Path("/proc/loadavg").read_text().split()[0]
            start = time.time()
            asyncio.run(load(server.url, args.seconds))
            time.sleep(3)  # the last scrapes
            draw(prom, start, time.time(), args.out, provenance(args.seconds, loadavg, args.note))
        finally:
            prom.stop()
            server.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
