"""The names the manifests use, and small helpers over rendered objects (lists of dicts)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]  # the checkout: tests/helpers/k8s/objects.py

# The Kubernetes version whose schemas the manifests must satisfy. kubernetes-validate 1.37 bundles
# 1.28 to 1.37; 1.32 keeps us off fields newer clusters added (kubectl only renders: its version does not matter).
KUBERNETES_VERSION = "1.32"

API = "housing-api"  # Deployment, Service, HPA and PDB of the API
PRIMARY = f"{API}-primary"  # in prod, Flagger's copy of the API that serves (components/flagger-canary)
REDIS = "housing-api-redis"  # Deployment and Service of the cache tier
REDIS_JOB = "housing-api-redis"  # the job of the Redis exporters' series (prometheus/alerts.yaml)
APP_UID = 10001
SHUTDOWN_MARGIN_S = 2  # between the app's hard shutdown deadline and SIGKILL
PUBLIC_PATHS = ("/predict", "/health", "/readyz", "/model", "/docs", "/openapi.json")
INTERNAL_PATHS = ("/metrics", "/livez")
SAFE_RETRY_ON = {"connect-failure", "refused-stream"}
APP_REQUEST_TIMEOUT_S = 5.0  # the service's REQUEST_TIMEOUT_S default: past it, a request gets 503
# The API process has two CPU-bound threads (the event loop and one inference thread, with
# OMP_NUM_THREADS=1): a CFS quota below two cores can stall both when they overlap.
APP_BUSY_THREADS = 2
LATEST = frozenset({"latest"})
MUTABLE_TAGS = frozenset({"latest", "dev", "main", "master", "stable", "edge", "nightly"})
REQUIRED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
)
# A Namespace holds more than one component, so it carries only the application-wide labels.
NAMESPACE_LABELS = ("app.kubernetes.io/part-of", "app.kubernetes.io/managed-by")
# Labels that change between releases or say nothing about identity: never in a selector,
# because a Deployment's selector is immutable.
NON_SELECTOR_LABELS = (
    "app.kubernetes.io/version",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
DASHBOARD = ROOT / "grafana" / "dashboards" / "housing-api.json"
DASHBOARD_LABEL = "grafana_dashboard"  # what the Grafana Helm chart's sidecar looks for
ALERT_RULES = ROOT / "prometheus" / "alerts.yaml"  # the PrometheusRule's spec, as a plain rule file
JOB = "housing-api"  # the job every alert and dashboard query selects
# Istio's metrics merging: the injected sidecar declares this port (15090, Envoy's own stats), and
# its agent serves the app's metrics merged with Envoy's on 15020 at /stats/prometheus.
ISTIO_SIDECAR_PORT = "http-envoy-prom"
ISTIO_MERGED_PORT = 15020
ISTIO_MERGED_PATH = "/stats/prometheus"
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_POD_LABELS = {"istio": "ingressgateway"}  # the shared ingress gateway's pods
RELEASE_LABEL = ROOT / ".k8s" / "components" / "prometheus-operator" / "release-label.yaml"

Obj = dict[str, Any]
Check = Callable[[list[Obj]], list[str]]


# --- small helpers over rendered objects -------------------------------------------------------


def ref(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def namespace_of(obj: Obj) -> str | None:
    return obj["metadata"].get("namespace")


def of_kind(objs: list[Obj], *kinds: str) -> list[Obj]:
    return [o for o in objs if o["kind"] in kinds]


def find(objs: list[Obj], kind: str, name: str, namespace: str | None) -> Obj | None:
    for obj in of_kind(objs, kind):
        if obj["metadata"]["name"] == name and namespace_of(obj) == namespace:
            return obj
    return None


def workloads(objs: list[Obj]) -> list[Obj]:
    return of_kind(objs, *WORKLOAD_KINDS)


def pod_spec(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Obj) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def all_containers(workload: Obj) -> Iterator[tuple[str, Obj]]:
    spec = pod_spec(workload)
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind, []):
            yield f"{ref(workload)} {kind[:-1]} {container['name']}", container


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def match_labels(label_selector: Obj) -> dict[str, str]:
    # matchExpressions would need a real evaluator; we do not use them, so a check that meets
    # one fails loudly (an empty selector selects nothing here) rather than guessing.
    return {} if label_selector.get("matchExpressions") else label_selector.get("matchLabels", {})


def redis_workload(objs: list[Obj]) -> Obj | None:
    """The cache tier's workload: the base's Deployment, or a StatefulSet (components/redis-sentinel)."""
    return next((w for w in workloads(objs) if w["metadata"]["name"] == REDIS), None)


def api_deployment(objs: list[Obj]) -> Obj | None:
    return next((w for w in of_kind(objs, "Deployment") if w["metadata"]["name"] == API), None)


def container_port(workload: Obj, port: int | str) -> Obj | None:
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    for container in pod_spec(workload)["containers"]:
        for declared in container.get("ports", []):
            if port in (declared.get("name"), declared["containerPort"]):
                return declared
    return None


def resolve_service(objs: list[Obj], host: str, namespace: str | None) -> Obj | None:
    """A Service named by `name`, `name.ns`, `name.ns.svc` or `name.ns.svc.cluster.local`."""
    name, _, rest = host.partition(".")
    target_ns, _, suffix = rest.partition(".")
    if suffix not in ("", "svc", "svc.cluster.local"):
        return None
    return find(objs, "Service", name, target_ns or namespace)


def quantity_bytes(value: str | int) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, f"not a quantity: {value!r}"
    return float(match[1]) * units.get(match[2], 1)


def redis_bytes(value: str) -> int:
    # Redis: 1k = 1000 bytes, 1kb = 1024 bytes (redis.conf, "units are case insensitive").
    units = {"": 1, "k": 10**3, "kb": 2**10, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}
    match = re.fullmatch(r"([0-9]+)([a-z]*)", value.lower())
    assert match and match[2] in units, f"not a Redis memory size: {value!r}"
    return int(match[1]) * units[match[2]]


def duration_seconds(value: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(ms|s|m|h)", value)
    assert match, f"not a duration: {value!r}"
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match[2]]


def flag_values(args: list[str]) -> dict[str, str]:
    """`["--save", "", "--appendonly", "no"]` -> {"--save": "", "--appendonly": "no"}."""
    return {args[i]: args[i + 1] if i + 1 < len(args) else "" for i in range(len(args)) if args[i].startswith("--")}


def config_value(objs: list[Obj], workload: Obj, container: Obj, key: str) -> str | None:
    """The value a container sees for env var `key`, following env and envFrom ConfigMap refs."""
    namespace = namespace_of(workload)
    for env in container.get("env", []):
        if env["name"] != key:
            continue
        if "value" in env:
            return str(env["value"])
        cm_ref = env.get("valueFrom", {}).get("configMapKeyRef", {})
        cm = find(objs, "ConfigMap", cm_ref.get("name", ""), namespace)
        return None if cm is None else cm.get("data", {}).get(cm_ref.get("key"))
    for source in container.get("envFrom", []):
        cm_name = source.get("configMapRef", {}).get("name")
        cm = find(objs, "ConfigMap", cm_name or "", namespace)
        if cm is not None and key in cm.get("data", {}):
            return str(cm["data"][key])
    return None


def _named(objs: list[Obj], kind: str, name: str = API) -> Obj:
    return next(o for o in of_kind(objs, kind) if o["metadata"]["name"] == name)


def _config(objs: list[Obj]) -> dict[str, str]:
    return of_kind(objs, "ConfigMap")[0]["data"]


def _api(objs: list[Obj]) -> Obj:
    deployment = api_deployment(objs)
    assert deployment is not None
    return deployment


def _api_container(objs: list[Obj]) -> Obj:
    return pod_spec(_api(objs))["containers"][0]
