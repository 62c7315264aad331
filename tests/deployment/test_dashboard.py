"""The Grafana dashboard and its provisioning, read as files: complete, portable, and reading only
metrics the service exports (or, for the marked panels, that Kubernetes provides)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from conftest import ROOT, app_client

from housing_api.schemas import SAMPLE_BATCH
from housing_api_testing.prom import (
    AWAITED,
    DASHBOARD,
    EXPORTED_METRICS,
    K8S_ONLY_METRICS,
    REDIS_EXPORTER_METRICS,
    REDIS_JOB,
    is_k8s_only,
    load_dashboard,
    metric_names,
    panels,
    queries,
    render,
    scraped,
)

GRAFANA = ROOT / "grafana"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
VARIABLES = {"datasource", "job", "namespace"}
BUILTIN_VARIABLES = {"__rate_interval"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Series names on a real app's /metrics after traffic that creates every labelled series."""
    with app_client() as c:
        c.post("/predict", json=SAMPLE_BATCH)
        c.post("/predict", json=[{**SAMPLE_BATCH[0], "MedInc": -1}])
        c.get("/predict", params=SAMPLE_BATCH[0])
        return set(scraped(c.get("/metrics").text)) | set(AWAITED)


def test_the_dashboard_has_a_stable_uid_and_no_fixed_datasource(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "housing-api"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == VARIABLES
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    for panel, target in queries(dashboard):
        assert panel["datasource"] == DATASOURCE == target["datasource"], panel["title"]
    uids = re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD.read_text())
    assert set(uids) <= {"housing-api", "${datasource}", "-- Grafana --"}, uids


def test_every_istio_panel_says_what_must_be_scraped_for_it(dashboard: dict[str, Any]) -> None:
    # Istio's series come from the gateway's Envoy, which the app's PodMonitor never scrapes.
    istio = [p for p in panels(dashboard) if any("istio_" in t.get("expr", "") for t in p.get("targets", []))]
    assert len(istio) >= 3
    for panel in istio:
        assert "PodMonitor housing-api-gateway" in panel["description"], panel["title"]
        assert "http-envoy-prom" in panel["description"], panel["title"]


def test_every_panel_has_a_title_a_description_a_unit_and_a_query(dashboard: dict[str, Any]) -> None:
    titles = []
    for panel in panels(dashboard):
        titles.append(panel.get("title"))
        assert panel.get("title") and panel.get("description"), panel
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert panel.get("targets"), panel["title"]
        assert all(t.get("expr", "").strip() and t.get("refId") for t in panel["targets"]), panel["title"]
    assert len(titles) == len(set(titles)), "two panels share a title"


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert g["x"] + g["w"] <= 24 and not area & cells, panel["title"]
        cells |= area


def test_no_panel_reads_a_metric_the_service_does_not_export(dashboard: dict[str, Any], exported: set[str]) -> None:
    for panel, target in queries(dashboard):
        names = metric_names(target["expr"])
        assert names, (panel["title"], target["expr"])
        if is_k8s_only(target["expr"]):
            assert names <= K8S_ONLY_METRICS, (panel["title"], names - K8S_ONLY_METRICS)
        elif names & set(REDIS_EXPORTER_METRICS):  # the Redis row: the exporter's (test_alerts.py holds it)
            assert names <= set(REDIS_EXPORTER_METRICS), (panel["title"], names - set(REDIS_EXPORTER_METRICS))
        else:
            assert names <= exported, (panel["title"], names - exported)


def test_every_service_selector_filters_by_job_and_namespace(dashboard: dict[str, Any]) -> None:
    # Without them, another FastAPI app scraped by the same Prometheus would add its http_* series.
    for panel, target in queries(dashboard):
        for name, matchers in re.findall(r"([A-Za-z_:][\w:]*)\{([^}]*)\}", target["expr"]):
            if name in REDIS_EXPORTER_METRICS:  # the Redis servers' own job, the pods' namespace
                assert f'job="{REDIS_JOB}"' in matchers and 'namespace=~"$namespace"' in matchers, (
                    panel["title"],
                    name,
                )
            elif name not in K8S_ONLY_METRICS:
                assert 'job=~"$job"' in matchers and 'namespace=~"$namespace"' in matchers, (panel["title"], name)


def test_queries_use_only_the_dashboards_variables(dashboard: dict[str, Any]) -> None:
    for panel, target in queries(dashboard):
        used = set(re.findall(r"\$\{?(\w+)\}?", target["expr"])) - {"1"}  # $1: label_replace's group
        assert used <= VARIABLES | BUILTIN_VARIABLES, (panel["title"], used)
        assert "$" not in render(target["expr"]).replace("$1", ""), panel["title"]


def test_the_latency_panel_draws_the_slo_line(dashboard: dict[str, Any]) -> None:
    latency = next(p for p in panels(dashboard) if p["title"].startswith("Latency of /predict"))
    defaults = latency["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s"
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "line"
    assert [s["value"] for s in defaults["thresholds"]["steps"]] == [None, 0.05]  # "p99 < 50 ms"
    assert {t["legendFormat"] for t in latency["targets"]} == {"p50", "p90", "p95", "p99"}


_AGGREGATION = re.compile(r"\b(sum|avg|count|min|max|topk|bottomk|quantile|stddev)\s*(?:by\s*\(([^)]*)\))?\s*\(")


def per_pod_problems(expr: str) -> list[str]:
    """Aggregations that mix pods: anything but `max` (the busiest pod) must group by pod or instance."""
    problems = []
    for op, by in _AGGREGATION.findall(expr):
        grouped = {label.strip() for label in by.split(",")}
        if op != "max" and not grouped & {"pod", "instance"}:
            problems.append(f"{op} by ({by})" if by else op)
    return problems


def test_per_pod_limit_panels_aggregate_per_pod(dashboard: dict[str, Any]) -> None:
    # MAX_INFLIGHT_REQUESTS, MAX_QUEUED_ROWS and the container limits are per pod: a line drawn at one
    # of them means nothing against a sum over pods (tests/deployment/test_prometheus.py evaluates these queries).
    per_pod = [p for p in panels(dashboard) if "per pod" in p["title"]]
    assert {p["title"] for p in panels(dashboard) if "limit" in p["title"]} <= {p["title"] for p in per_pod}
    assert len(per_pod) >= 5
    for panel in per_pod:
        for target in panel["targets"]:
            assert per_pod_problems(target["expr"]) == [], (panel["title"], target["expr"])


@pytest.mark.parametrize(
    ("expr", "problems"),
    [
        ('sum(housing_api_inflight_requests{job=~"$job"})', ["sum"]),  # the panel before issue 14
        ("avg by (stage) (housing_api_queue_rows)", ["avg by (stage)"]),
        ("max by (pod, instance) (housing_api_inflight_requests)", []),
        ("sum by (pod) (rate(a[1m])) / sum by (pod) (rate(b[1m]))", []),
        ("max(housing_api_inflight_requests)", []),
    ],
)
def test_the_per_pod_check_catches_sums_over_pods(expr: str, problems: list[str]) -> None:
    assert per_pod_problems(expr) == problems


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (status) (rate(http_requests_total{job=~"$job"}[$__rate_interval]))', {"http_requests_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m])))", {"a_bucket"}),
        ("(sum(rate(a_total[1m])) or vector(0)) / sum(rate(b_total[1m]))", {"a_total", "b_total"}),
        ('count by (version) (label_replace(info, "version", "$1", "version", "(.{12}).*"))', {"info"}),
        ("x_count offset 5m > bool 1e3", {"x_count"}),
        ("count(up == 0) or vector(0)", {"up"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_datasource_and_dashboard_provider_are_provisioned() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert (source["type"], source["isDefault"]) == ("prometheus", True)
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "housing-api.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    readme = (ROOT / "README.md").read_text()
    # The README's `docker run` mounts the dashboards where the provider looks for them.
    assert f'/grafana/dashboards:{provider["options"]["path"]}:ro"' in readme


def test_the_readme_shows_the_picture_every_panel_and_every_metric(dashboard: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Observability\n", 1)[1].split("\n## ", 1)[0]
    assert "(docs/dashboard.png)" in section and (ROOT / "docs" / "dashboard.png").stat().st_size > 10_000
    for panel in panels(dashboard):
        assert f"- **{panel['title']}**:" in section, panel["title"]
    for name in EXPORTED_METRICS:
        assert f"| `{name}` |" in section, name


def test_the_dashboard_json_is_formatted_for_review() -> None:
    text = DASHBOARD.read_text()
    assert text == json.dumps(json.loads(text), indent=2) + "\n"
