"""Does the server's cache hit ratio match what CACHE_RATE implies?

load.js repeats a pool row with probability CACHE_RATE, independently for every row, and its
setup() predicts the pool once before the run and scrapes /metrics after that warm-up. Between that
scrape and one taken after k6 exits, every row the server served belongs to the run, every pool
row is a cache hit and every fresh row a miss (fresh rows are never repeated). So:

    server hit ratio = (memory + redis rows) / all rows   (housing_api_rows_served_total deltas)
    expected         = CACHE_RATE, with no warm-up correction

The number of pool rows is binomial, so the ratio is checked within four standard errors:
    tolerance = 4 * sqrt(CACHE_RATE * (1 - CACHE_RATE) / rows)
which is exactly 0 at CACHE_RATE 0 and 1 (every row must miss, or every row must hit). Two exact
checks compare the server with what k6 counted in answered requests: its hits with the pool rows,
and the rows that reached the model (`housing_api_model_batch_rows_sum`, counted where the model is
called, not by the bookkeeping that sets X-Cache) with the fresh rows, each computed exactly once.

Against a deployment, /metrics is not routed through the gateway and a Service spreads scrapes over
pods, so the same counters are read through Prometheus (`PrometheusCounters`): every pod's series
at two instants, differenced per series (a pod that restarted counts from 0), then summed.

Used by loadtest/report.py and tests/load/test_loadtest.py.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCES = ("memory", "redis", "model")
SIGMAS = 4.0
# The counters worth a before/after difference, and the label that splits each of them.
# ("" for a counter without labels, whose one value is keyed "").
MODEL_ROWS = "housing_api_model_batch_rows_sum"
COUNTERS = {
    "housing_api_rows_served_total": "source",
    "housing_api_redis_errors_total": "op",
    "housing_api_rejected_requests_total": "reason",
    "housing_api_redis_write_dropped_total": "",
    MODEL_ROWS: "",
}
_SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? ([0-9.e+-]+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')
Counters = dict[str, dict[str, float]]


def parse_counters(metrics_text: str) -> Counters:
    """COUNTERS by label value, from a Prometheus text exposition (absent series count as 0); a
    counter with more labels than the one named (redis errors: op and reason) is summed over them."""
    found: Counters = {name: {} for name in COUNTERS}
    for name, labels, number in _SAMPLE.findall(metrics_text):
        if name not in COUNTERS:
            continue
        value = dict(_LABEL.findall(labels)).get(COUNTERS[name], "") if COUNTERS[name] else ""
        if COUNTERS[name] and not labels:
            continue
        found[name][value] = found[name].get(value, 0.0) + float(number)
    for source in SOURCES:
        found["housing_api_rows_served_total"].setdefault(source, 0.0)
    found[MODEL_ROWS].setdefault("", 0.0)
    return found


def parse_rows_served(metrics_text: str) -> dict[str, float]:
    """housing_api_rows_served_total by source."""
    return parse_counters(metrics_text)["housing_api_rows_served_total"]


def scrape(base_url: str, timeout: float = 10.0) -> dict[str, dict[str, float]]:
    with urllib.request.urlopen(base_url.rstrip("/") + "/metrics", timeout=timeout) as response:
        return parse_counters(response.read().decode())


def scrape_rows_served(base_url: str) -> dict[str, float]:
    return scrape(base_url)["housing_api_rows_served_total"]


class PrometheusCounters:
    """COUNTERS summed over every pod Prometheus scrapes, as deltas between two instants."""

    def __init__(self, url: str, selector: str = "", timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.selector = selector
        self.timeout = timeout

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=self.timeout) as response:
            answer = json.loads(response.read())
        if answer.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {expr}: {answer.get('error')}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def series(self, name: str, at: float) -> dict[tuple[tuple[str, str], ...], float]:
        """Every series of one counter at `at` (the latest sample of each), keyed by its labels."""
        result = self.query(f"{name}{{{self.selector}}}", at)
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in result}

    def delta(self, start: float, end: float) -> Counters:
        """Per series end - start (a series that restarted or appeared counts from 0), summed by label."""
        found: Counters = {name: {} for name in COUNTERS}
        for name, label in COUNTERS.items():
            before = self.series(name, start)
            for key, value in self.series(name, end).items():
                grown = value - before.get(key, 0.0)
                by = dict(key).get(label, "") if label else ""
                found[name][by] = found[name].get(by, 0.0) + (value if grown < 0 else grown)
        for source in SOURCES:
            found["housing_api_rows_served_total"].setdefault(source, 0.0)
        found[MODEL_ROWS].setdefault("", 0.0)
        return found

    def pods(self, at: float) -> int:
        return len(self.series("housing_api_rows_served_total", at)) // len(SOURCES)

    def label_values(self, name: str, label: str, at: float) -> set[str]:
        return {r["metric"].get(label, "") for r in self.query(f"{name}{{{self.selector}}}", at)}


def delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], name: str) -> dict[str, float]:
    """after - before of one counter, by label value, leaving out zeros."""
    changes = {k: v - before[name].get(k, 0.0) for k, v in after[name].items()}
    return {k: v for k, v in changes.items() if v}


def tolerance(cache_rate: float, rows: int) -> float:
    """Four binomial standard errors of the share of pool rows among `rows` independent rows."""
    if rows <= 0:
        return math.inf
    return SIGMAS * math.sqrt(cache_rate * (1.0 - cache_rate) / rows)


@dataclass(frozen=True)
class HitRatioCheck:
    """The server's rows during one run, next to what k6 sent."""

    cache_rate: float
    served: dict[str, float]  # rows by source during the run (after - setup scrape)
    k6_pool_rows: int  # pool rows in answered requests, counted by k6
    k6_fresh_rows: int
    warmup_rows: float | None  # rows the server served between our first scrape and k6's setup scrape
    model_rows: float | None = None  # rows that reached the model during the run (None: not scraped)

    @property
    def rows(self) -> int:
        return int(sum(self.served.values()))

    @property
    def hits(self) -> int:
        return int(self.served["memory"] + self.served["redis"])

    @property
    def ratio(self) -> float:
        return self.hits / self.rows if self.rows else math.nan

    @property
    def tolerance(self) -> float:
        return tolerance(self.cache_rate, self.rows)

    @property
    def within_tolerance(self) -> bool:
        return abs(self.ratio - self.cache_rate) <= self.tolerance + 1e-12

    @property
    def matches_k6(self) -> bool:
        """Exact: the server hit exactly the pool rows and missed exactly the fresh rows k6 sent."""
        return self.hits == self.k6_pool_rows and self.rows - self.hits == self.k6_fresh_rows

    @property
    def model_matches_k6(self) -> bool:
        """Exact: every fresh row reached the model once, and no pool row did."""
        return self.model_rows is not None and int(self.model_rows) == self.k6_fresh_rows

    @property
    def ok(self) -> bool:
        return self.within_tolerance and self.matches_k6 and self.model_matches_k6


def load_summary(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def counter(summary: dict[str, Any], name: str) -> int:
    metric = summary["metrics"].get(name)
    return int(metric["values"]["count"]) if metric else 0


def check_run(
    summary: dict[str, Any],
    after: dict[str, float],
    before: dict[str, float] | None,
    model_rows_after: float | None = None,
) -> HitRatioCheck:
    """Compare k6's summary (with its post-warm-up scrape) and a scrape taken after k6 exited."""
    setup = summary.get("setup_data") or {}
    scraped = setup.get("metricsAfterWarmup") or {}
    start = scraped.get("rows_served")
    if start is None:
        raise ValueError("k6 could not scrape /metrics in setup(); use --prometheus-url to check a deployment")
    start = {source: float(start.get(source, 0.0)) for source in SOURCES}
    warmup = None if before is None else sum(start.values()) - sum(before.values())
    model_start = scraped.get("model_rows")
    return HitRatioCheck(
        cache_rate=float(summary["loadtest"]["cacheRate"]),
        served={source: after[source] - start[source] for source in SOURCES},
        k6_pool_rows=counter(summary, "pool_rows"),
        k6_fresh_rows=counter(summary, "fresh_rows"),
        warmup_rows=warmup,
        model_rows=None if model_start is None or model_rows_after is None else model_rows_after - model_start,
    )


def check_deltas(summary: dict[str, Any], run: Counters, warmup: Counters | None) -> HitRatioCheck:
    """The same check from counter deltas measured elsewhere (through Prometheus): `run` from the
    end of k6's warm-up to after k6 exited, `warmup` from before k6 to the end of its warm-up."""
    return HitRatioCheck(
        cache_rate=float(summary["loadtest"]["cacheRate"]),
        served={source: run["housing_api_rows_served_total"].get(source, 0.0) for source in SOURCES},
        k6_pool_rows=counter(summary, "pool_rows"),
        k6_fresh_rows=counter(summary, "fresh_rows"),
        warmup_rows=None if warmup is None else sum(warmup["housing_api_rows_served_total"].values()),
        model_rows=run[MODEL_ROWS].get("", 0.0),
    )


def failed_requests(summary: dict[str, Any]) -> int:
    """Requests of the scenario that failed (any non-2xx, 429 included, or no answer)."""
    scenario = summary["loadtest"]["scenario"]
    metric = summary["metrics"].get(f"http_req_failed{{scenario:{scenario}}}")
    return int(metric["values"]["passes"]) if metric else 0
