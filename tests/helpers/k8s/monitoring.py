"""Checks of the monitoring objects: the dashboard ConfigMap, the PodMonitors (the API's and the
gateway's), the operator's selector and the PrometheusRule."""

from __future__ import annotations

import re

import yaml

from helpers.k8s.objects import (
    ALERT_RULES,
    API,
    DASHBOARD,
    DASHBOARD_LABEL,
    GATEWAY_NAMESPACE,
    GATEWAY_POD_LABELS,
    ISTIO_MERGED_PATH,
    ISTIO_MERGED_PORT,
    ISTIO_SIDECAR_PORT,
    JOB,
    REDIS,
    RELEASE_LABEL,
    ROOT,
    Obj,
    api_deployment,
    container_port,
    match_labels,
    namespace_of,
    of_kind,
    pod_labels,
    ref,
    selects,
    workloads,
)
from helpers.k8s.workloads import _istio_injected
from housing_api_testing.flagger import fleet


def check_grafana_dashboard(objs: list[Obj]) -> list[str]:
    """Prod ships the dashboard as one ConfigMap for the Grafana sidecar, the same JSON as in git."""
    maps = [o for o in of_kind(objs, "ConfigMap") if o["metadata"].get("labels", {}).get(DASHBOARD_LABEL) == "1"]
    if len(maps) != 1:
        return [f"expected one ConfigMap labelled {DASHBOARD_LABEL}=1, found {[ref(m) for m in maps]}"]
    if maps[0].get("data", {}).get(DASHBOARD.name) != DASHBOARD.read_text():
        return [f"{ref(maps[0])} does not hold {DASHBOARD.relative_to(ROOT)} as {DASHBOARD.name}"]
    return []


def _merged_address(endpoint: Obj) -> bool:
    """The endpoint's relabelling sends the scrape to the pod's merged-metrics port."""
    return any(
        r.get("targetLabel") == "__address__"
        and r.get("sourceLabels") == ["__address__"]
        and r.get("replacement") == f"$1:{ISTIO_MERGED_PORT}"
        for r in endpoint.get("relabelings", [])
    )


def _istio_merges_metrics(objs: list[Obj], workload: Obj) -> list[str]:
    """What Istio needs to merge the app's metrics into 15020: a sidecar, and where to find them."""
    metadata = workload["spec"]["template"]["metadata"]
    annotations, labels = metadata.get("annotations", {}), metadata.get("labels", {})
    problems = []
    if not _istio_injected(objs, namespace_of(workload)) or "false" in (
        labels.get("sidecar.istio.io/inject"),
        annotations.get("sidecar.istio.io/inject"),
    ):
        problems.append(f"{ref(workload)} gets no Istio sidecar, so nothing serves port {ISTIO_MERGED_PORT}")
    if annotations.get("prometheus.istio.io/merge-metrics") == "false":
        problems.append(f"{ref(workload)} turns Istio's metrics merging off")
    port = annotations.get("prometheus.io/port")
    if annotations.get("prometheus.io/scrape") != "true" or port is None or container_port(workload, port) is None:
        problems.append(
            f"{ref(workload)}: Istio finds the app's metrics port in prometheus.io/port, which names no port"
        )
    return problems


def _scrapes_the_gateway(monitor: Obj) -> bool:
    return selects(match_labels(monitor["spec"]["selector"]), GATEWAY_POD_LABELS)


def check_pod_monitors(objs: list[Obj]) -> list[str]:
    """The PodMonitor selects exactly the API pods, names job housing-api, and scrapes a port that
    works: a declared app port without Istio; the merged 15020 under Istio's STRICT mTLS."""
    # The Redis exporters' own PodMonitor (components/redis-sentinel) is check_redis_exporter's, the
    # gateway's is check_gateway_monitor's.
    monitors = [
        m for m in of_kind(objs, "PodMonitor") if m["metadata"]["name"] != REDIS and not _scrapes_the_gateway(m)
    ]
    if len(monitors) != 1:
        return [f"expected one PodMonitor for the API, found {[ref(m) for m in monitors]}"]
    monitor = monitors[0]
    spec = monitor["spec"]
    selector = match_labels(spec["selector"])
    namespaces = spec.get("namespaceSelector", {}).get("matchNames") or [namespace_of(monitor)]
    matched = [w for w in workloads(objs) if namespace_of(w) in namespaces and selects(selector, pod_labels(w))]
    api = api_deployment(matched)
    if {fleet(objs, w["metadata"]["name"]) for w in matched} != {API} or api is None:
        return [f"{ref(monitor)} selector {selector} matches {[ref(w) for w in matched]}, expected Deployment/{API}"]
    problems = []
    job = pod_labels(api).get(spec.get("jobLabel", ""))
    if job != JOB:
        problems.append(
            f"{ref(monitor)} jobLabel {spec.get('jobLabel')!r} gives job {job!r}, the alerts select {JOB!r}"
        )
    injected = _istio_injected(objs, namespace_of(api))
    for endpoint in spec["podMetricsEndpoints"]:
        port, path = endpoint.get("port"), endpoint.get("path", "/metrics")
        if port == ISTIO_SIDECAR_PORT:
            problems += _istio_merges_metrics(objs, api)
            if not _merged_address(endpoint) or path != ISTIO_MERGED_PATH:
                problems.append(
                    f"{ref(monitor)} scrapes the sidecar's {port} at {path}, not the merged "
                    f"{ISTIO_MERGED_PORT}{ISTIO_MERGED_PATH}: Envoy's stats only, no app metrics"
                )
        elif port is None or container_port(api, port) is None:
            problems.append(f"{ref(monitor)} scrapes port {port!r}, which no container of {ref(api)} declares")
        elif injected:
            problems.append(
                f"{ref(monitor)} scrapes app port {port!r} in plain HTTP, which the sidecar refuses under "
                f"STRICT mTLS: scrape Istio's merged {ISTIO_MERGED_PORT}{ISTIO_MERGED_PATH}"
            )
    return problems


def _keeps(relabelings: list[Obj], label: str, value: str) -> bool:
    """Whether a series whose `label` is `value` survives every `keep` on that label."""
    keeps = [r for r in relabelings if r.get("action") == "keep" and r.get("sourceLabels") == [label]]
    return all(re.fullmatch(r.get("regex", "(.*)"), value) for r in keeps)


def check_gateway_monitor(objs: list[Obj]) -> list[str]:
    """A PodMonitor scrapes the ingress gateway that the Gateway object binds, Envoy's own stats, and
    keeps every series the edge SLIs of prometheus/alerts.yaml read for this service."""
    monitors = [m for m in of_kind(objs, "PodMonitor") if _scrapes_the_gateway(m)]
    if len(monitors) != 1:
        return [f"expected one PodMonitor scraping the ingress gateway, found {[ref(m) for m in monitors]}"]
    monitor, problems = monitors[0], []
    spec = monitor["spec"]
    namespaces = spec.get("namespaceSelector", {}).get("matchNames") or [namespace_of(monitor)]
    if GATEWAY_NAMESPACE not in namespaces:
        problems.append(f"{ref(monitor)} looks for the gateway in {namespaces}, not {GATEWAY_NAMESPACE}")
    for gateway in of_kind(objs, "Gateway"):
        if gateway["spec"]["selector"] != match_labels(spec["selector"]):
            problems.append(f"{ref(monitor)} selects {match_labels(spec['selector'])}, not {ref(gateway)}'s pods")
    rules = ALERT_RULES.read_text()
    read = set(re.findall(r"\b(istio_\w+)\{", rules))
    # The API's Services the rules select (with Flagger, the gateway's route goes to -primary and -canary).
    selected = set(re.findall(r'destination_service_name=~?"([^"]+)"', rules))
    services = {
        s["metadata"]["name"]
        for s in of_kind(objs, "Service")
        if any(re.fullmatch(r, s["metadata"]["name"]) for r in selected)
    }
    for endpoint in spec["podMetricsEndpoints"]:
        if (endpoint.get("port"), endpoint.get("path")) != (ISTIO_SIDECAR_PORT, ISTIO_MERGED_PATH):
            problems.append(f"{ref(monitor)} scrapes {endpoint.get('port')}{endpoint.get('path')}, not Envoy's stats")
        kept = endpoint.get("metricRelabelings", [])
        problems += [f"{ref(monitor)} drops {name}, which the SLOs read" for name in sorted(read)
                     if not _keeps(kept, "__name__", name)]  # fmt: skip
        problems += [f"{ref(monitor)} drops destination_service_name={name}" for name in sorted(services)
                     if not _keeps(kept, "destination_service_name", name)]  # fmt: skip
    return problems


def check_monitoring_selector(objs: list[Obj]) -> list[str]:
    """Every PodMonitor and PrometheusRule carries the label the operator's Prometheus selects by,
    with the value set once in the component's release-label.yaml."""
    transformer = yaml.safe_load(RELEASE_LABEL.read_text())
    problems = []
    for obj in of_kind(objs, "PodMonitor", "PrometheusRule"):
        labels = obj["metadata"].get("labels", {})
        for key, value in transformer["labels"].items():
            if labels.get(key) != value:
                problems.append(f"{ref(obj)} has {key}={labels.get(key)!r}, not {value!r}: Prometheus ignores it")
    return problems


def check_prometheus_rule(objs: list[Obj]) -> list[str]:
    """One PrometheusRule, whose groups are exactly prometheus/alerts.yaml's."""
    rules = of_kind(objs, "PrometheusRule")
    if len(rules) != 1:
        return [f"expected one PrometheusRule, found {[ref(r) for r in rules]}"]
    if rules[0]["spec"] != yaml.safe_load(ALERT_RULES.read_text()):
        return [f"{ref(rules[0])} differs from {ALERT_RULES.relative_to(ROOT)}: run `make prometheus-rule`"]
    return []
