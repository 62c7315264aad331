"""The alert rules (prometheus/alerts.yaml): promtool accepts them and their unit tests pass, every
alert is tested both ways and has a runbook section, the burn rates are the SRE workbook's, and the
thresholds are the dashboard's.

promtool comes with Debian's `prometheus` package: installed when missing and root, otherwise the
promtool tests skip and say how to install it (under CI=true they fail instead: CI must run them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.alert_rules import RULES, Rule, alerts, load_rules, recorded

from housing_api_testing.prom import (
    AWAITED,
    AWAITED_LABELS,
    K8S_ONLY_METRICS,
    PROMETHEUS_INSTALL,
    REDIS_EXPORTER_METRICS,
    REDIS_JOB,
    PrometheusUnavailable,
    exported_series,
    load_dashboard,
    metric_names,
    panels,
    prometheus_binary,
)

ROOT = Path(__file__).resolve().parents[2]
UNIT_TESTS = (ROOT / "prometheus" / "alerts_test.yaml", ROOT / "prometheus" / "alerts_slow_test.yaml")
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_BASE = "https://github.com/example/housing-api/blob/main/docs/runbook.md#"
SEVERITIES = {"critical", "warning"}  # critical pages, warning opens a ticket
# The SLOs: the error budget is what the SLO leaves (0.1 % of requests, 1 % of answers).
AVAILABILITY_BUDGET = 0.001
LATENCY_THRESHOLD_S = 0.05
LATENCY_BUDGET = 0.01
# The Google SRE workbook's multiwindow, multi-burn-rate table: long window, short window, burn.
PAGE_WINDOWS = {("1h", "5m", 14.4), ("6h", "30m", 6.0)}
TICKET_WINDOWS = {("1d", "2h", 3.0), ("3d", "6h", 1.0)}
# Series read from elsewhere: Prometheus's own per target, kube-state-metrics, the Redis exporter and the Envoy proxies
# (the ingress gateway's view of the service: the edge SLIs).
NOT_FROM_THE_APP = {
    "up",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_deployment_status_replicas_available",
    "kube_deployment_spec_replicas",
    "istio_request_duration_milliseconds_count",
} | K8S_ONLY_METRICS
# What selects this service in series that are not the app's: kube-state-metrics' object, Envoy's
# destination (reported by the calling proxy: the gateway, or a mesh client's sidecar).
# With Flagger (components/flagger-canary), housing-api is the canary and housing-api-primary serves.
KUBE_OBJECTS = (
    'horizontalpodautoscaler=~"housing-api|housing-api-primary"',
    'deployment=~"housing-api|housing-api-primary"',
)
EDGE_MATCHERS = ('reporter="source"', 'destination_service_name=~"housing-api(-primary|-canary)?"')
# The SLIs: the app's (`predict`, the breakdown), the edge's, and the one the alerts read (`slo`:
# the edge's where the gateway is scraped, else the app's).
SLI_FAMILIES = ("namespace_job:housing_api_predict", "namespace:housing_api_edge", "namespace_job:housing_api_slo")
EDGE_LATENCY_BUCKET = 'le=~"50|50.0"'  # Istio's bucket in ms; Prometheus 3 writes le="50.0"
NOT_FROM_THE_APP |= set(REDIS_EXPORTER_METRICS)
# Labels Prometheus adds to every scraped series (the target's), beside the app's own.
TARGET_LABELS = {"job", "instance", "namespace", "pod"}

Evaluation = tuple[str, set[tuple[str | None, ...]], list[dict[str, str]]]


def promtool() -> str:
    """promtool, from the same Debian package as prometheus (installed when missing and root)."""
    try:
        prometheus_binary()
    except PrometheusUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the promtool tests: {exc}")
        pytest.skip(str(exc).replace("prometheus is", "promtool is"))
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(f"promtool is not installed; install it with: {PROMETHEUS_INSTALL}")
    return found


# --- promtool ------------------------------------------------------------------------------------


@pytest.mark.integration
def test_promtool_checks_the_rule_file() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


@pytest.mark.integration
@pytest.mark.parametrize("unit_tests", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(unit_tests: Path) -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", unit_tests.name],
        cwd=unit_tests.parent, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# --- what the unit tests cover -------------------------------------------------------------------


def _identity(labels: dict[str, str]) -> tuple[str | None, ...]:
    """What tells one scenario from another in the unit tests: namespace, pod, instance."""
    return tuple(labels.get(k) for k in ("namespace", "pod", "instance"))


def _series_labels(series: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', series))


def unit_test_evaluations() -> list[Evaluation]:
    """(alertname, identities of the input series, expected alerts' labels) for every evaluation."""
    evaluations = []
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            inputs = {_identity(_series_labels(s["series"])) for s in test["input_series"]}
            for case in test.get("alert_rule_test", []):
                expected = [a["exp_labels"] for a in case.get("exp_alerts") or []]
                evaluations.append((case["alertname"], inputs, expected))
    return evaluations


def coverage_problems(alert: str, evaluations: list[Evaluation]) -> list[str]:
    """An alert needs an evaluation that fires it, and one with input series that must not."""
    cases = [(inputs, expected) for name, inputs, expected in evaluations if name == alert]
    problems = [] if any(expected for _, expected in cases) else [f"no unit test fires {alert}"]
    if not any(not expected or inputs - {_identity(e) for e in expected} for inputs, expected in cases):
        problems.append(f"no unit test has series that must not fire {alert}")
    return problems


@pytest.mark.parametrize("alert", [a["alert"] for a in alerts()])
def test_every_alert_has_series_that_fire_it_and_series_that_must_not(alert: str) -> None:
    assert coverage_problems(alert, unit_test_evaluations()) == []


def test_unit_tests_name_only_real_alerts() -> None:
    names = {a["alert"] for a in alerts()}
    assert {name for name, _, _ in unit_test_evaluations()} <= names


def test_the_coverage_check_notices_a_missing_case() -> None:
    fires = ("A", {("n", "p1", None)}, [{"namespace": "n", "pod": "p1"}])
    quiet = ("A", {("n", "p1", None)}, [])
    assert coverage_problems("A", [fires]) == ["no unit test has series that must not fire A"]
    assert coverage_problems("A", [quiet]) == ["no unit test fires A"]
    assert coverage_problems("A", [fires, quiet]) == []
    assert coverage_problems("B", [fires, quiet]) == [
        "no unit test fires B",
        "no unit test has series that must not fire B",
    ]


# --- each alert reads as an operator needs it ------------------------------------------------------


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_anchors() -> set[str]:
    return {_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", RUNBOOK.read_text(), flags=re.M)}


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_every_alert_has_a_severity_words_and_a_runbook_section(alert: Rule) -> None:
    assert alert["labels"]["severity"] in SEVERITIES
    annotations = alert["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert annotations["summary"].strip() and len(annotations["description"]) > 80
    url = annotations["runbook_url"]
    assert url == RUNBOOK_BASE + alert["alert"].lower()
    assert url.removeprefix(RUNBOOK_BASE) in runbook_anchors(), f"docs/runbook.md has no section {url}"


def test_every_runbook_section_says_what_it_means_how_to_confirm_what_to_do_and_when_to_escalate() -> None:
    text = RUNBOOK.read_text()
    for alert in alerts():
        section = text.split(f"\n## {alert['alert']}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**What it means.**", "**Confirm.**", "**What to do.**", "**Escalate**"):
            assert part in section, (alert["alert"], part)
        assert "```promql" in section and "kubectl" in section, alert["alert"]


def test_the_runbooks_queries_read_real_metrics() -> None:
    exported = set(exported_series()) | set(AWAITED) | NOT_FROM_THE_APP | set(recorded())
    blocks = re.findall(r"```promql\n(.*?)```", RUNBOOK.read_text(), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    queries = [line for line in lines if line and not line.startswith("#")]
    assert len(queries) > 20
    for query in queries:
        assert metric_names(query) and metric_names(query) <= exported, query


def test_every_alert_filters_to_this_service() -> None:
    # Another app scraped by the same Prometheus must not feed these alerts.
    for name, expr in [(a["alert"], a["expr"]) for a in alerts()] + list(recorded().items()):
        for metric, matchers in re.findall(r"([A-Za-z_][\w]*)\{([^}]*)\}", expr):
            if metric.startswith("kube_"):
                assert any(m in matchers for m in KUBE_OBJECTS), (name, metric)
            elif metric in REDIS_EXPORTER_METRICS:
                assert f'job="{REDIS_JOB}"' in matchers, (name, metric)
            elif metric.startswith("istio_"):
                assert all(m in matchers for m in EDGE_MATCHERS), (name, metric)
            else:
                assert 'job="housing-api"' in matchers, (name, metric)


def test_rules_read_only_metrics_and_labels_the_service_or_kubernetes_exports() -> None:
    exported = {**exported_series(), **{name: labels for name, (labels, _) in AWAITED.items()}}
    known = set(exported) | NOT_FROM_THE_APP | set(recorded())
    for rule in load_rules():
        name = rule.get("alert") or rule.get("record")
        assert metric_names(rule["expr"]) <= known, (name, metric_names(rule["expr"]) - known)
        for metric, matchers in re.findall(r"([A-Za-z_]\w*)\{([^}]*)\}", rule["expr"]):
            if metric in exported:
                labels = set(re.findall(r"(\w+)\s*[=!]~?", matchers))
                extra = labels - exported[metric] - TARGET_LABELS - {lab for m, lab in AWAITED_LABELS if m == metric}
                assert not extra, (name, metric, extra)


@pytest.mark.integration
def test_the_real_redis_exporter_exports_what_the_rules_read(tmp_path: Path) -> None:
    """Debian's prometheus-redis-exporter against a real redis-server: every metric and label the
    rules and the runbook read from it exists (an exporter upgrade that renames one fails here)."""
    from housing_api_testing import harness

    try:
        server = harness.RedisServer(tmp_path, "--maxmemory", "10mb", "--maxmemory-policy", "allkeys-lru").start()
    except harness.Unavailable as exc:
        pytest.skip(str(exc))
    try:
        exporter = harness.RedisExporter(server).start()
    except harness.Unavailable as exc:
        server.stop()
        pytest.skip(str(exc))
    try:
        text = exporter.metrics()
    finally:
        exporter.stop()
        server.stop()
    for metric, labels in REDIS_EXPORTER_METRICS.items():
        line = next((line for line in text.splitlines() if re.match(rf"{metric}[{{ ]", line)), None)
        assert line is not None, metric
        assert all(f"{label}=" in line for label in labels), (metric, line)
    assert 'role="master"' in text and "redis_memory_max_bytes 1.048576e+07" in text


def test_awaited_metrics_are_not_exported_yet() -> None:
    exported = exported_series()
    landed = [name for name in AWAITED if name in exported]
    landed += [f"{m}{{{label}}}" for m, label in AWAITED_LABELS if label in exported.get(m, frozenset())]
    assert not landed, f"{landed} landed: remove them from AWAITED / AWAITED_LABELS"


# --- the SLOs: the workbook's burn rates and the dashboard's thresholds -----------------------------


def burn_conditions(expr: str) -> set[tuple[str, str, float]]:
    """(long window, short window, burn) of each `long > (burn * budget) and short > (burn * budget)`."""
    found = re.findall(r"ratio_rate(\w+) > \(([\d.]+) \* ([\d.]+)\)\s+and \S+:ratio_rate(\w+) > \(([\d.]+) \* ", expr)
    return {(long, short, float(burn)) for long, burn, _, short, burn2 in found if burn == burn2}


def budgets(expr: str) -> set[float]:
    return {float(b) for b in re.findall(r"> \([\d.]+ \* ([\d.]+)\)", expr)}


@pytest.mark.parametrize(
    ("alert", "windows", "sli", "budget"),
    [
        ("HousingApiAvailabilityFastBurn", PAGE_WINDOWS, "5xx", AVAILABILITY_BUDGET),
        ("HousingApiAvailabilitySlowBurn", TICKET_WINDOWS, "5xx", AVAILABILITY_BUDGET),
        ("HousingApiLatencyFastBurn", PAGE_WINDOWS, "slow", LATENCY_BUDGET),
        ("HousingApiLatencySlowBurn", TICKET_WINDOWS, "slow", LATENCY_BUDGET),
    ],
)
def test_burn_rate_alerts_use_the_workbooks_windows_and_the_slo_budget(
    alert: str, windows: set[tuple[str, str, float]], sli: str, budget: float
) -> None:
    rule = next(a for a in alerts() if a["alert"] == alert)
    assert burn_conditions(rule["expr"]) == windows
    assert budgets(rule["expr"]) == {budget}
    assert set(re.findall(r"namespace_job:housing_api_slo_(\w+):", rule["expr"])) == {sli}
    assert "_predict_" not in rule["expr"] and "_edge_" not in rule["expr"]  # the SLO's SLI, never one side
    assert rule["labels"]["severity"] == ("critical" if windows == PAGE_WINDOWS else "warning")
    for long, short, _ in windows:  # each window is a recording rule over the same SLI, at both ends
        for window in (long, short):
            for family in SLI_FAMILIES:
                assert f"{family}_{sli}:ratio_rate{window}" in recorded()


@pytest.mark.parametrize("family", SLI_FAMILIES)
def test_every_sli_window_is_the_same_query_over_another_range(family: str) -> None:
    for sli in ("5xx", "slow"):
        exprs = {name: expr for name, expr in recorded().items() if name.startswith(f"{family}_{sli}:")}
        assert len(exprs) == 7
        shapes = {re.sub(r"\[\w+\]|ratio_rate\w+", "W", expr) for expr in exprs.values()}
        assert len(shapes) == 1, shapes
        for name, expr in exprs.items():
            window = name.rsplit("ratio_rate", 1)[1]
            assert set(re.findall(r"\[(\w+)\]|ratio_rate(\w+)", expr)) <= {(window, ""), ("", window)}, name


@pytest.mark.parametrize("sli", ["5xx", "slow"])
def test_the_slo_reads_the_edge_where_there_is_one_else_the_app(sli: str) -> None:
    expr = recorded()[f"namespace_job:housing_api_slo_{sli}:ratio_rate1h"]
    edge, app = re.split(r"\s+or\s+", expr.strip())
    assert f"namespace:housing_api_edge_{sli}:ratio_rate1h" in edge and '"job", "housing-api"' in edge
    assert app.strip() == f"namespace_job:housing_api_predict_{sli}:ratio_rate1h"


def test_the_edge_slis_count_every_answer_by_the_services_own_namespace() -> None:
    errors = recorded()["namespace:housing_api_edge_5xx:ratio_rate5m"]
    assert errors.count('response_code=~"5.."') == 1 and errors.count("istio_requests_total{") == 2
    slow = recorded()["namespace:housing_api_edge_slow:ratio_rate5m"]
    assert EDGE_LATENCY_BUCKET in slow and slow.count('response_code=~"2.."') == 2
    for expr in (errors, slow):  # the gateway runs in istio-system: group by where the service runs
        assert expr.count('"namespace", "$1", "destination_service_namespace"') == 2


def test_the_latency_sli_counts_successful_answers_over_the_slo_bucket() -> None:
    expr = recorded()["namespace_job:housing_api_predict_slow:ratio_rate5m"]
    assert f'le="{LATENCY_THRESHOLD_S}"' in expr
    assert expr.count('status="2xx"') == 2 and expr.count('handler="/predict"') == 2
    from housing_api.metrics import LATENCY_BUCKETS

    assert LATENCY_THRESHOLD_S in LATENCY_BUCKETS  # a bucket boundary, so the share is exact


def test_the_dashboard_draws_the_alerts_thresholds() -> None:
    by_title = {p["title"]: p for p in panels(load_dashboard())}
    latency = next(p for t, p in by_title.items() if t.startswith("Latency of /predict"))
    errors = next(p for t, p in by_title.items() if t.startswith("Error ratio"))

    def lines(panel: dict[str, Any]) -> list[float]:
        return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"] if s["value"] is not None]

    assert lines(latency) == [LATENCY_THRESHOLD_S]
    assert lines(errors) == [AVAILABILITY_BUDGET]
    assert f"p99 < {LATENCY_THRESHOLD_S * 1000:g} ms" in latency["title"]


# --- the scrape job docs/deployment.md gives a Prometheus without the operator ----------------------


@pytest.mark.integration
def test_the_documented_scrape_job_and_rule_file_pass_promtool(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "deployment.md").read_text()
    config = yaml.safe_load(re.search(r"```yaml\n# prometheus.yml\n(.*?)```", text, flags=re.S)[1])
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "housing-api"  # what every rule selects
    # Debian's promtool is built without Kubernetes service discovery, so the job's targets are
    # swapped for a static one; its relabelling, the part we wrote, is checked as it is.
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod", "namespaces": {"names": ["housing-api"]}}]
    job["static_configs"] = [{"targets": ["127.0.0.1:8000"]}]
    config["rule_files"] = [str(RULES)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool(), "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
