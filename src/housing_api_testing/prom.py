"""Prometheus and the Grafana dashboard, for the tests and for `make dashboard-png`.

- The dashboard's queries: every panel, every PromQL expression, the metric names it reads, and
  the one list of metrics that only exist on Kubernetes (kube-state-metrics and cAdvisor).
- The metrics the service exports, by name and labels (the README's metrics table lists them).
- A real Prometheus child process (Debian's `prometheus` package), installed when missing and
  possible, scraping the service on loopback every second.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from housing_api.exposition import LABELLED_FAMILIES, MODEL_VERSION
from housing_api_testing.harness import free_port

ROOT = Path(__file__).resolve().parents[2]  # the checkout: src/housing_api_testing/<module>.py
DASHBOARD = ROOT / "grafana" / "dashboards" / "housing-api.json"
PROMETHEUS_INSTALL = "apt-get update && apt-get install -y --no-install-recommends prometheus"
JOB = "housing-api"

# The one place that says which series only a Kubernetes cluster (with Istio) has: an expression
# reading any of them must parse, but cannot return data from a service scraped on loopback.
REDIS_JOB = "housing-api-redis"
"""The job of the Redis servers' exporter sidecars (components/redis-sentinel)."""
REDIS_EXPORTER_METRICS: dict[str, frozenset[str]] = {
    "redis_evicted_keys_total": frozenset(),
    "redis_memory_used_bytes": frozenset(),
    "redis_memory_max_bytes": frozenset(),
    "redis_instance_info": frozenset({"role", "redis_mode", "redis_version", "maxmemory_policy"}),
    "redis_uptime_in_seconds": frozenset(),
    "redis_expired_keys_total": frozenset(),
    "redis_keyspace_hits_total": frozenset(),
    "redis_keyspace_misses_total": frozenset(),
    "redis_connected_clients": frozenset(),
    "redis_connected_slaves": frozenset(),
}
"""What the rules and the runbook read from prometheus-redis-exporter, with the labels they use:
test_alerts.py holds the real exporter binary to it."""
K8S_ONLY_METRICS = frozenset(
    {
        "kube_deployment_status_replicas",  # kube-state-metrics
        "kube_horizontalpodautoscaler_status_desired_replicas",
        "kube_horizontalpodautoscaler_status_current_replicas",
        "container_cpu_usage_seconds_total",  # cAdvisor (the kubelet)
        "container_memory_working_set_bytes",
        "container_cpu_cfs_periods_total",
        "container_cpu_cfs_throttled_periods_total",
        "istio_requests_total",  # Istio's standard metrics, from the Envoy proxies
        "istio_request_duration_milliseconds_bucket",
    }
)

# Every metric on /metrics: name as PromQL sees it (histograms and summaries by their base name)
# -> (type, labels). Renaming or dropping one, or changing its labels, must fail a test.
EXPORTED_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "http_requests_total": ("counter", frozenset({"handler", "method", "status"})),
    "http_request_duration_seconds": ("histogram", frozenset({"handler", "method", "status"})),
    "http_request_duration_highr_seconds": ("histogram", frozenset()),
    "http_request_size_bytes": ("summary", frozenset({"handler"})),
    "http_response_size_bytes": ("summary", frozenset({"handler"})),
    "http_requests_inprogress": ("gauge", frozenset({"handler", "method"})),
    "housing_api_cache_lookups_total": ("counter", frozenset({"tier", "outcome"})),
    "housing_api_rows_served_total": ("counter", frozenset({"source"})),
    "housing_api_model_inference_seconds": ("histogram", frozenset()),
    "housing_api_model_batch_rows": ("histogram", frozenset()),
    "housing_api_redis_errors_total": ("counter", frozenset({"op", "reason"})),
    "housing_api_queue_rows": ("gauge", frozenset({"stage"})),
    "housing_api_memory_cache_rows": ("gauge", frozenset()),
    "housing_api_inflight_requests": ("gauge", frozenset()),
    "housing_api_rejected_requests_total": ("counter", frozenset({"reason"})),
    "housing_api_redis_up": ("gauge", frozenset()),
    "housing_api_request_timeouts_total": ("counter", frozenset({"kind"})),
    "housing_api_worker_errors_total": ("counter", frozenset({"stage"})),
    "housing_api_stage_up": ("gauge", frozenset({"stage"})),
    "housing_api_inflight_rows": ("gauge", frozenset()),
    "housing_api_redis_write_dropped_total": ("counter", frozenset()),
    "housing_api_client_disconnects_total": ("counter", frozenset()),
    "housing_api_model_info": ("gauge", frozenset({"version", "estimator", "fast_path"})),
    "housing_api_build_info": ("gauge", frozenset({"version"})),
    "housing_api_gc_pause_seconds": ("histogram", frozenset({"generation"})),
    "housing_api_prediction_drift": ("histogram", frozenset()),
    "housing_api_drift_rows_total": ("counter", frozenset({"outcome"})),
    # prometheus_client's process, GC and platform collectors, on the app's registry
    "process_cpu_seconds_total": ("counter", frozenset()),
    "process_resident_memory_bytes": ("gauge", frozenset()),
    "process_virtual_memory_bytes": ("gauge", frozenset()),
    "process_open_fds": ("gauge", frozenset()),
    "process_max_fds": ("gauge", frozenset()),
    "process_start_time_seconds": ("gauge", frozenset()),
    "python_gc_collections_total": ("counter", frozenset({"generation"})),
    "python_gc_objects_collected_total": ("counter", frozenset({"generation"})),
    "python_gc_objects_uncollectable_total": ("counter", frozenset({"generation"})),
    "python_info": ("gauge", frozenset({"implementation", "major", "minor", "patchlevel", "version"})),
}


def exported_series() -> dict[str, frozenset[str]]:
    """EXPORTED_METRICS as the series names PromQL reads, with their labels: the service's own
    families (http_*, housing_api_*) also carry model_version (exposition.py)."""
    series: dict[str, frozenset[str]] = {}
    for name, (kind, own) in EXPORTED_METRICS.items():
        labels = own | {MODEL_VERSION} if name.startswith(LABELLED_FAMILIES) else own
        if kind == "histogram":
            series[name + "_bucket"] = labels | {"le"}
        if kind in ("histogram", "summary"):
            series[name + "_count"] = series[name + "_sum"] = labels
        else:
            series[name] = labels
    return series


# Written against the contracts of work in flight (issue 25, the service side): series -> the
# labels it will have and the issue that adds it, and (series, label) pairs still to come on series
# that exist. test_alerts.py's test_awaited_metrics_are_not_exported_yet fails once one lands, so
# that its entry here is removed and every check applies to it in full.
AWAITED: dict[str, tuple[frozenset[str], str]] = {}
AWAITED_LABELS: dict[tuple[str, str], str] = {}


def scraped(text: str) -> dict[str, set[str]]:
    """Series name -> label names in a /metrics page, as Prometheus stores them (no *_created)."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                series.setdefault(sample.name, set()).update(sample.labels)
    return series


# --- the dashboard -------------------------------------------------------------------------------


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows are layout), including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panels({"panels": panel.get("panels", [])})
        else:
            yield panel


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of every panel."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


# What the test's Prometheus substitutes for Grafana's variables: all jobs and namespaces (a
# series without a namespace label matches ".*"), and a rate window of a few 1 s scrapes.
TEST_VARIABLES = {"__rate_interval": "15s", "job": ".+", "namespace": ".*"}


def render(expr: str, variables: dict[str, str] = TEST_VARIABLES) -> str:
    """Substitute $name and ${name}; an unknown variable is left as is, so Prometheus rejects it."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m[1], m[0]), expr)


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_OFFSETS = re.compile(r"\boffset\s+-?\w+")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBERS = re.compile(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NAMES = re.compile(r"[A-Za-z_:][\w:]*")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "inf", "nan"})


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: identifiers that are not functions, keywords,
    label names (in matchers and grouping clauses), strings, durations or numbers."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _OFFSETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _NUMBERS.sub(" ", text)
    names = set()
    for match in _NAMES.finditer(text):
        is_call = text[match.end() :].lstrip().startswith("(")
        if not is_call and match[0].lower() not in _KEYWORDS:
            names.add(match[0])
    return names


def is_k8s_only(expr: str) -> bool:
    return bool(metric_names(expr) & K8S_ONLY_METRICS)


# --- Prometheus ----------------------------------------------------------------------------------


class PrometheusUnavailable(Exception):
    """No prometheus binary, and it cannot be installed here."""


def prometheus_binary(install: bool = True, timeout_s: float = 300) -> str:
    """The prometheus binary; as root with apt-get, install Debian's package when missing."""
    found = shutil.which("prometheus")
    if found is None and install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["sh", "-c", PROMETHEUS_INSTALL.replace("apt-get install", "apt-get -qq install")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout_s, check=False,
        )  # fmt: skip
        found = shutil.which("prometheus")
    if found is None:
        raise PrometheusUnavailable(f"prometheus is not installed; install it with: {PROMETHEUS_INSTALL}")
    return found


class Prometheus:
    """A Prometheus child process on a free loopback port, scraping `targets` every second."""

    def __init__(
        self, binary: str, workdir: Path, targets: list[str], job: str = JOB, rule_files: tuple[Path, ...] = (),
        other_jobs: dict[str, list[str]] | None = None,
    ) -> None:  # fmt: skip
        self.binary = binary
        self.dir = workdir
        self.targets = targets
        self.job = job
        self.other_jobs = other_jobs or {}
        """More scrape jobs, name -> targets (the Redis exporter's, for the dashboard's Redis row)."""
        self.rule_files = rule_files
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        return json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": job, "static_configs": [{"targets": targets}]}
                    for job, targets in {self.job: self.targets, **self.other_jobs}.items()
                ],
                "rule_files": [str(path) for path in self.rule_files],
            }
        )

    def start(self, timeout_s: float = 30) -> Prometheus:
        config = self.dir / "prometheus.yml"
        config.write_text(self.config())
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=(self.dir / "prometheus.log").open("wb"),
        )  # fmt: skip
        if not self._wait(lambda: httpx.get(self.url + "/-/ready", timeout=1).status_code == 200, timeout_s):
            self.stop()
            raise RuntimeError(f"prometheus did not start: {(self.dir / 'prometheus.log').read_text()[-2000:]}")
        return self

    def wait_for_targets(self, timeout_s: float = 60) -> bool:
        """Until every target has been scraped successfully (the first scrape of a new target
        comes up to 5 s after start: Prometheus applies target changes on a 5 s tick)."""
        return self.wait_for_value(f'count(up{{job="{self.job}"}} == 1)', len(self.targets), timeout_s)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None

    def _wait(self, ready: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if ready():
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        return False

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        """GET /api/v1/<path>; the whole JSON answer (status, data or errorType and error)."""
        answer: dict[str, Any] = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10).json()
        return answer

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at now: the result vector. Raises ValueError when Prometheus rejects it."""
        answer = self.api("query", query=expr)
        if answer["status"] != "success":
            raise ValueError(f"{answer.get('errorType')}: {answer.get('error')} in {expr}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        answer = self.api("query_range", query=expr, start=start, end=end, step=step)
        if answer["status"] != "success":
            raise ValueError(f"{answer.get('errorType')}: {answer.get('error')} in {expr}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of an expression, or None when it returns nothing."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for_value(self, expr: str, expected: float, timeout_s: float = 20) -> bool:
        """Until the scrapes have caught up: `expr` evaluates to `expected`."""
        return self._wait(lambda: self.value(expr) == expected, timeout_s)


# --- PromQL on synthetic series (promtool, from the same Debian package) ---------------------------


def promtool_binary() -> str:
    """promtool, which ships with Debian's prometheus package (installed like prometheus_binary)."""
    found = shutil.which("promtool")
    if found is None:
        prometheus_binary()
        found = shutil.which("promtool")
    if found is None:
        raise PrometheusUnavailable(f"promtool is not installed; install it with: {PROMETHEUS_INSTALL}")
    return found


def promql_on_series(
    workdir: Path, series: dict[str, str], expr: str, expected: list[tuple[str, float]], eval_time: str = "10m"
) -> str:
    """Evaluate `expr` with Prometheus's own engine (`promtool test rules`) over synthetic `series`
    (series selector -> promtool values notation, one sample a minute) and compare it with
    `expected` ([(labels, value)]). Returns "" when they match, else promtool's explanation."""
    test = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series.items()],
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": eval_time,
                        "exp_samples": [{"labels": labels, "value": value} for labels, value in expected],
                    }
                ],
            }
        ],
    }
    path = workdir / "promql_test.yml"
    path.write_text(json.dumps(test))  # JSON is YAML
    done = subprocess.run([promtool_binary(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    return "" if done.returncode == 0 else done.stdout + done.stderr
