"""The Kubernetes manifests as data, and the checks they must pass (tests/deployment/test_k8s_*.py).

`kubectl kustomize` renders base, dev and prod once per test module (the `rendered`, `prod` and `dev`
fixtures, registered by tests/conftest.py). Every core object is validated against the Kubernetes
OpenAPI schemas bundled with kubernetes-validate (strict: unknown fields fail); Istio objects get
structural JSON schemas of the fields we use.

Each `check_*` function takes rendered objects and returns a list of problems (empty = fine), so the
same function runs on the real render (test_k8s_manifests.py) and on deliberately broken copies
(test_k8s_checks_fire.py: every check reports the breakage it exists to catch).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import yaml

from housing_api.config import Settings
from housing_api_testing.flagger import fleet

ROOT = Path(__file__).resolve().parents[2]  # the checkout: tests/helpers/k8s.py

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


# --- rendering ---------------------------------------------------------------------------------


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


# --- schema validation -------------------------------------------------------------------------


# The Istio fields we use, as a compact shape: a mapping is an object that allows only these keys
# ("key!" = required), a one-item list is a non-empty array, and a leaf names a type. A typo such
# as `retry_on` is then an unknown key, not a silently ignored one.
ISTIO_SHAPES = yaml.safe_load("""
Gateway:
  selector!: labels
  servers!:
    - port!: {number!: port, name!: string, protocol!: HTTP|HTTPS|HTTP2|GRPC|TCP|TLS}
      hosts!: [string]
      tls: object
VirtualService:
  hosts!: [string]
  gateways: [string]
  http!:
    - name: string
      match:
        - uri: {exact: string, prefix: string, regex: string}
          gateways: [string]
      route!:
        - destination!: {host!: string, port: {number!: port}, subset: string}
          weight: count
      timeout: duration
      retries: {attempts!: count, perTryTimeout: duration, retryOn: string,
                retryRemoteLocalities: bool}
DestinationRule:
  host!: string
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN|LEAST_REQUEST|RANDOM|PASSTHROUGH}
    connectionPool:
      tcp: {maxConnections: count, connectTimeout: duration, idleTimeout: duration}
      http: {http1MaxPendingRequests: count, http2MaxRequests: count,
             maxRequestsPerConnection: count, maxRetries: count, idleTimeout: duration}
    outlierDetection: {consecutiveGatewayErrors: count, consecutive5xxErrors: count,
                       splitExternalLocalOriginErrors: bool, consecutiveLocalOriginFailures: count,
                       interval: duration, baseEjectionTime: duration,
                       maxEjectionPercent: percent, minHealthPercent: percent}
""")
# The Prometheus Operator's kinds, in the same compact shape (monitoring.coreos.com/v1).
MONITORING_SHAPES = yaml.safe_load("""
PodMonitor:
  jobLabel: string
  selector!: {matchLabels!: labels}
  namespaceSelector: {matchNames: [string], any: bool}
  podMetricsEndpoints!:
    - port: string
      path: string
      scheme: http|https
      interval: duration
      scrapeTimeout: duration
      relabelings:
        - sourceLabels: [string]
          separator: string
          regex: string
          replacement: string
          targetLabel: string
          action: replace|keep|drop|labelmap|labeldrop|labelkeep|hashmod|lowercase|uppercase
      metricRelabelings:
        - sourceLabels: [string]
          separator: string
          regex: string
          replacement: string
          targetLabel: string
          action: replace|keep|drop|labelmap|labeldrop|labelkeep|hashmod|lowercase|uppercase
PrometheusRule:
  groups!:
    - name!: string
      interval: duration
      rules!:
        - record: string
          alert: string
          expr!: string
          for: duration
          labels: labels
          annotations: labels
""")
ISTIO_SECURITY_SHAPES = yaml.safe_load("""
PeerAuthentication:
  selector: {matchLabels!: labels}
  mtls!: {mode!: STRICT|PERMISSIVE|DISABLE}
""")
FLAGGER_GROUP = "flagger.app"
CRD_SHAPES = {
    "networking.istio.io": ISTIO_SHAPES,
    "security.istio.io": ISTIO_SECURITY_SHAPES,
    "monitoring.coreos.com": MONITORING_SHAPES,
}
CRD_VERSIONS = {
    "networking.istio.io": ["networking.istio.io/v1beta1", "networking.istio.io/v1"],
    "security.istio.io": ["security.istio.io/v1beta1", "security.istio.io/v1"],
    "monitoring.coreos.com": ["monitoring.coreos.com/v1"],
}
LEAF_SCHEMAS: dict[str, Obj] = {
    "string": {"type": "string"},
    "bool": {"type": "boolean"},
    "object": {"type": "object"},
    "labels": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
    "count": {"type": "integer", "minimum": 0},
    "percent": {"type": "integer", "minimum": 0, "maximum": 100},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "duration": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"},
}


def shape_schema(shape: Any) -> Obj:
    if isinstance(shape, dict):
        return {
            "type": "object",
            "properties": {k.rstrip("!"): shape_schema(v) for k, v in shape.items()},
            "required": [k.rstrip("!") for k in shape if k.endswith("!")],
            "additionalProperties": False,
        }
    if isinstance(shape, list):
        return {"type": "array", "minItems": 1, "items": shape_schema(shape[0])}
    return LEAF_SCHEMAS.get(shape) or {"enum": shape.split("|")}


def crd_schema(group: str, kind: str) -> Obj | None:
    """A structural schema of the fields we use of an Istio or Prometheus Operator kind."""
    if kind not in CRD_SHAPES[group]:
        return None
    schema = shape_schema(
        {
            "metadata!": {
                "name!": "string",
                "namespace": "string",
                "labels": "object",
                "annotations": "object",
            },
            "spec!": CRD_SHAPES[group][kind],
        }
    )
    schema["properties"]["apiVersion"] = {"enum": CRD_VERSIONS[group]}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] += ["apiVersion", "kind"]
    return schema


def check_schemas(objs: list[Obj]) -> list[str]:
    """Core objects against Kubernetes' OpenAPI (strict); Istio and operator objects against ours."""
    problems = []
    for obj in objs:
        group = obj["apiVersion"].partition("/")[0]
        if group == FLAGGER_GROUP:  # Flagger's Canary and MetricTemplates: tests/test_deploy_canary.py
            continue
        if group in CRD_SHAPES:
            schema = crd_schema(group, obj["kind"])
            if schema is None:
                problems.append(f"{ref(obj)}: no structural schema for {group} kind {obj['kind']}")
                continue
            for error in jsonschema.Draft202012Validator(schema).iter_errors(obj):
                where = ".".join(str(p) for p in error.absolute_path)
                problems.append(f"{ref(obj)}: {where}: {error.message}")
            continue
        problem = _kubernetes_schema_problem(json.dumps(obj, sort_keys=True))
        if problem:
            problems.append(f"{ref(obj)}: {problem}")
    return problems


@functools.cache
def _kubernetes_schema_problem(obj_json: str) -> str | None:
    # Keyed by the object's JSON: each validation re-reads a 1.3 MB schema file, and the
    # mutation tests re-check many unchanged objects.
    try:
        kubernetes_validate.validate(json.loads(obj_json), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{'.'.join(str(p) for p in error.path)}: {error.message}"
    except kubernetes_validate.SchemaNotFoundError as error:
        return str(error.message)
    return None


# --- invariants --------------------------------------------------------------------------------


def check_service_selectors(objs: list[Obj]) -> list[str]:
    """Each Service selects the pods of exactly its same-named workload, on a declared port."""
    problems = []
    for svc in of_kind(objs, "Service"):
        selector = svc["spec"].get("selector", {})
        matched = [
            w for w in workloads(objs) if namespace_of(w) == namespace_of(svc) and selects(selector, pod_labels(w))
        ]
        if [fleet(objs, w["metadata"]["name"]) for w in matched] != [fleet(objs, svc["metadata"]["name"])]:
            problems.append(
                f"{ref(svc)} selector {selector} matches {[ref(w) for w in matched]}, "
                f"expected the pods of the workload {svc['metadata']['name']}"
            )
            continue
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if container_port(matched[0], target) is None:
                problems.append(
                    f"{ref(svc)} port {port.get('name')} targets {target!r}, "
                    f"which no container of {ref(matched[0])} declares"
                )
    return problems


def check_probe_ports(objs: list[Obj]) -> list[str]:
    """Every probe and the Prometheus annotation name a port the container declares."""
    problems = []
    for workload in workloads(objs):
        for where, container in all_containers(workload):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                handler = container.get(probe, {})
                for action in ("httpGet", "tcpSocket", "grpc"):
                    port = handler.get(action, {}).get("port")
                    if port is not None and container_port(workload, port) is None:
                        problems.append(f"{where} {probe} port {port!r} is not a container port")
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        scrape_port = annotations.get("prometheus.io/port")
        if scrape_port is not None and container_port(workload, scrape_port) is None:
            problems.append(f"{ref(workload)} prometheus.io/port {scrape_port!r} is not a container port")
    return problems


def check_api_pod(objs: list[Obj]) -> list[str]:
    """The API pod: three probes on the right paths, scraped, runs as 10001, /tmp writable."""
    deployment = api_deployment(objs)
    if deployment is None:
        return [f"no Deployment/{API}"]
    problems = []
    spec = pod_spec(deployment)
    api = spec["containers"][0]
    paths = {
        probe: api.get(probe, {}).get("httpGet", {}).get("path")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    if paths != {"startupProbe": "/livez", "readinessProbe": "/readyz", "livenessProbe": "/livez"}:
        problems.append(f"API probe paths are {paths}")
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    if (annotations.get("prometheus.io/scrape"), annotations.get("prometheus.io/path")) != (
        "true",
        "/metrics",
    ):
        problems.append("API pod template lacks prometheus.io/scrape=true, path=/metrics")
    context = spec.get("securityContext", {})
    ids = [context.get(k) for k in ("runAsUser", "runAsGroup", "fsGroup")]
    if ids != [APP_UID] * 3:
        problems.append(f"API pod runAsUser/runAsGroup/fsGroup are {ids}, expected {APP_UID}")
    empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    if not any(m["mountPath"] == "/tmp" and m["name"] in empty_dirs for m in api.get("volumeMounts", [])):
        problems.append("API container has no emptyDir at /tmp (its root filesystem is read-only)")
    spread = {
        c["topologyKey"]
        for c in spec.get("topologySpreadConstraints", [])
        if selects(match_labels(c["labelSelector"]), pod_labels(deployment))
    }
    if "kubernetes.io/hostname" not in spread:
        problems.append("API pods are not spread across nodes (kubernetes.io/hostname)")
    if not spec.get("initContainers"):
        problems.append("API pod has no init container waiting for Redis")
    return problems


def check_container_security(objs: list[Obj]) -> list[str]:
    """Every container, init ones included, is non-root, locked down and has requests and limits."""
    problems = []
    for workload in workloads(objs):
        pod_context = pod_spec(workload).get("securityContext", {})
        for where, container in all_containers(workload):
            context = {**pod_context, **container.get("securityContext", {})}
            if context.get("runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if not context.get("runAsUser"):  # unset or 0 (root)
                problems.append(f"{where}: runAsUser is {context.get('runAsUser')!r}, not a uid")
            if container.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if container.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if "ALL" not in context.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities do not drop ALL")
            if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is not RuntimeDefault")
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(resources.get(bound, {}))
                if missing:
                    problems.append(f"{where}: no {bound} for {sorted(missing)}")
    return problems


def cpu_cores(value: str | int | float) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def check_api_cpu(objs: list[Obj]) -> list[str]:
    """The API's CPU limit leaves a core to each busy thread, and its request sits below the limit
    (the HPA scales on a share of the request). docs/reliability.md, "CPU limit: measured"."""
    deployment = api_deployment(objs)
    if deployment is None:
        return [f"no Deployment/{API}"]
    resources = pod_spec(deployment)["containers"][0].get("resources", {})
    limit = resources.get("limits", {}).get("cpu")
    request = resources.get("requests", {}).get("cpu")
    problems = []
    if limit is not None and cpu_cores(limit) < APP_BUSY_THREADS:
        problems.append(
            f"API CPU limit {limit} is below {APP_BUSY_THREADS} cores: the event loop and the inference thread "
            "can be throttled together"
        )
    if request is None or (limit is not None and cpu_cores(request) > cpu_cores(limit)):
        problems.append(f"API CPU request {request!r} must be set and within the limit {limit!r}")
    return problems


def check_image_tags(objs: list[Obj], forbidden: frozenset[str] = LATEST) -> list[str]:
    """Every image names a tag (or digest), and not one that moves."""
    problems = []
    for workload in workloads(objs):
        for where, container in all_containers(workload):
            image = container["image"]
            if "@sha256:" in image:
                continue
            name, _, tag = image.rpartition(":")
            if not name or "/" in tag:  # no colon, or the colon belonged to a registry port
                problems.append(f"{where}: image {image!r} has no tag")
            elif tag in forbidden:
                problems.append(f"{where}: image {image!r} uses the mutable tag {tag!r}")
    return problems


def check_prod_images(objs: list[Obj]) -> list[str]:
    """Prod pulls the API from a registry, with an immutable (version or sha) tag."""
    problems = check_image_tags(objs, forbidden=MUTABLE_TAGS)
    deployment = api_deployment(objs)
    image = pod_spec(deployment)["containers"][0]["image"] if deployment else ""
    first, slash, _ = image.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        problems.append(f"prod API image {image!r} does not name a registry")
    if deployment and pod_spec(deployment)["containers"][0].get("imagePullPolicy") == "Never":
        problems.append("prod API image has imagePullPolicy Never")
    return problems


def check_hpa_targets(objs: list[Obj], min_replicas: int = 1) -> list[str]:
    """Each HPA scales a Deployment that exists, on CPU, with both behaviours set."""
    problems = []
    for hpa in of_kind(objs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        workload = find(objs, target["kind"], target["name"], namespace_of(hpa))
        if workload is None or workload["apiVersion"] != target.get("apiVersion"):
            problems.append(
                f"{ref(hpa)} scales {target['kind']}/{target['name']} "
                f"({target.get('apiVersion')}), which is not rendered"
            )
        elif "replicas" in workload["spec"]:
            problems.append(f"{ref(workload)} sets spec.replicas, which resets the HPA's count on every apply")
        low, high = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
        if not min_replicas <= low <= high:
            problems.append(f"{ref(hpa)} minReplicas={low} maxReplicas={high}, need {min_replicas} <= min <= max")
        problems += _hpa_cpu_problems(hpa, workload)
        behavior = hpa["spec"].get("behavior", {})
        if behavior.get("scaleUp", {}).get("stabilizationWindowSeconds", 0) > 60:
            problems.append(f"{ref(hpa)} scale-up is slowed by a long stabilisation window")
        if behavior.get("scaleDown", {}).get("stabilizationWindowSeconds", 0) < 60:
            problems.append(f"{ref(hpa)} scale-down has no stabilisation window (>= 60 s)")
    return problems


def _hpa_cpu_problems(hpa: Obj, workload: Obj | None) -> list[str]:
    """CPU of the app container alone: a `Resource` metric averages every container of the pod, so
    under Istio the sidecar's request and usage would move the point where the fleet scales."""
    cpu = [m for m in hpa["spec"]["metrics"] if m.get(m["type"][0].lower() + m["type"][1:], {}).get("name") == "cpu"]
    if not cpu:
        return [f"{ref(hpa)} has no CPU metric"]
    problems = []
    running = {c["name"] for c in pod_spec(workload)["containers"]} if workload is not None else set()
    for metric in cpu:
        if metric["type"] != "ContainerResource":
            problems.append(
                f"{ref(hpa)} {metric['type']} CPU averages every container of the pod (the Istio sidecar's too): "
                "use ContainerResource on the app container"
            )
        elif workload is not None and metric["containerResource"].get("container") not in running:
            problems.append(
                f"{ref(hpa)} scales on the CPU of container {metric['containerResource'].get('container')!r}, "
                f"which {ref(workload)} does not run"
            )
    return problems


def check_pdbs(objs: list[Obj]) -> list[str]:
    """Each PDB covers exactly one workload, the API has one, and it never blocks a drain."""
    problems = []
    covered = set()
    for pdb in of_kind(objs, "PodDisruptionBudget"):
        selector = match_labels(pdb["spec"]["selector"])
        matched = [
            w for w in workloads(objs) if namespace_of(w) == namespace_of(pdb) and selects(selector, pod_labels(w))
        ]
        if len({fleet(objs, w["metadata"]["name"]) for w in matched}) != 1:
            problems.append(f"{ref(pdb)} selector {selector} matches {[ref(w) for w in matched]}")
            continue
        covered.add(fleet(objs, matched[0]["metadata"]["name"]))
        if "maxUnavailable" not in pdb["spec"]:
            problems.append(f"{ref(pdb)} uses minAvailable, which blocks drains at low replicas")
    if API not in covered:
        problems.append(f"no PodDisruptionBudget covers Deployment/{API}")
    return problems


def check_redis_url(objs: list[Obj]) -> list[str]:
    """REDIS_URL, as the API container sees it, names the Redis Service and one of its ports."""
    deployment = api_deployment(objs)
    if deployment is None:
        return [f"no Deployment/{API}"]
    url = config_value(objs, deployment, pod_spec(deployment)["containers"][0], "REDIS_URL")
    if url is None:
        return ["the API container gets no REDIS_URL"]
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        return [f"REDIS_URL {url!r} is not a redis:// URL with a host"]
    svc = resolve_service(objs, parts.hostname, namespace_of(deployment))
    if svc is None:
        return [f"REDIS_URL host {parts.hostname!r} is not a rendered Service"]
    problems = []
    redis_pods = [w for w in workloads(objs) if selects(svc["spec"].get("selector", {}), pod_labels(w))]
    if not any(c["image"].startswith("redis:") for w in redis_pods for c in pod_spec(w)["containers"]):
        problems.append(f"REDIS_URL host {parts.hostname!r} is {ref(svc)}, which selects no Redis pods")
    port = parts.port or 6379
    if port not in [p["port"] for p in svc["spec"]["ports"]]:
        problems.append(f"REDIS_URL port {port} is not a port of {ref(svc)}")
    return problems


def check_redis_is_a_cache(objs: list[Obj]) -> list[str]:
    """Redis evicts (allkeys-lru) within a memory cap below its limit, and never persists."""
    redis = redis_workload(objs)
    if redis is None:
        return [f"no Deployment/{REDIS}"]
    container = pod_spec(redis)["containers"][0]
    flags = flag_values(container.get("command", [])[1:] + container.get("args", []))
    problems = []
    wanted = {"--maxmemory-policy": "allkeys-lru", "--save": "", "--appendonly": "no"}
    for flag, value in wanted.items():
        if flags.get(flag) != value:
            problems.append(f"redis {flag} is {flags.get(flag)!r}, expected {value!r}")
    limit = container.get("resources", {}).get("limits", {}).get("memory")
    if "--maxmemory" not in flags or limit is None:
        problems.append("redis needs both --maxmemory and a memory limit")
    elif redis_bytes(flags["--maxmemory"]) >= 0.9 * quantity_bytes(limit):
        problems.append(f"redis --maxmemory {flags['--maxmemory']} leaves no headroom under its {limit} limit")
    return problems


def _prestop_sleep(container: Obj) -> int | None:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return int(command[1]) if len(command) == 2 and command[0] == "sleep" else None


def _istio_injected(objs: list[Obj], namespace: str | None) -> bool:
    ns = find(objs, "Namespace", namespace or "", None)
    return ns is not None and ns["metadata"].get("labels", {}).get("istio-injection") == "enabled"


def check_graceful_shutdown(objs: list[Obj]) -> list[str]:
    """The grace period outlasts preStop + the app's hard shutdown deadline (SHUTDOWN_TIMEOUT_S,
    which bounds its drain whatever is hung), and so does the Istio sidecar where injected."""
    deployment = api_deployment(objs)
    if deployment is None:
        return [f"no Deployment/{API}"]
    container = pod_spec(deployment)["containers"][0]
    pause = _prestop_sleep(container)
    if pause is None:
        return ["the API container has no preStop `sleep N`"]
    configured = config_value(objs, deployment, container, "SHUTDOWN_TIMEOUT_S")
    shutdown = float(configured) if configured else Settings.model_fields["shutdown_timeout_s"].default
    needed = pause + shutdown
    grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
    problems = []
    if grace < needed + SHUTDOWN_MARGIN_S:
        problems.append(
            f"terminationGracePeriodSeconds={grace} is not preStop {pause} s + SHUTDOWN_TIMEOUT_S {shutdown:g} s "
            f"+ {SHUTDOWN_MARGIN_S} s"
        )
    if _istio_injected(objs, namespace_of(deployment)):
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        proxy = yaml.safe_load(annotations.get("proxy.istio.io/config", "")) or {}
        drain = duration_seconds(proxy.get("terminationDrainDuration", "5s"))
        if not needed <= drain <= grace:
            problems.append(
                f"the Istio sidecar drains for {drain:g} s; it must outlive preStop "
                f"+ shutdown ({needed:g} s) and fit the grace period ({grace} s)"
            )
    return problems


def check_labels(objs: list[Obj]) -> list[str]:
    """app.kubernetes.io/* on every object and pod template; selectors only use stable ones."""
    problems = []
    for obj in objs:
        labels = obj["metadata"].get("labels", {})
        needed = NAMESPACE_LABELS if obj["kind"] == "Namespace" else REQUIRED_LABELS
        missing = [k for k in needed if k not in labels]
        if missing:
            problems.append(f"{ref(obj)} lacks labels {missing}")
    for workload in workloads(objs):
        missing = [k for k in REQUIRED_LABELS if k not in pod_labels(workload)]
        if missing:
            problems.append(f"{ref(workload)} pod template lacks labels {missing}")
        unstable = set(workload["spec"]["selector"].get("matchLabels", {})) & set(NON_SELECTOR_LABELS)
        if unstable:
            problems.append(f"{ref(workload)} selector uses {sorted(unstable)} (immutable field)")
    return problems


def check_virtual_services(objs: list[Obj]) -> list[str]:
    """Each VirtualService is bound to a rendered Gateway and routes to a real Service port."""
    problems = []
    for vs in of_kind(objs, "VirtualService"):
        namespace = namespace_of(vs)
        for gateway in vs["spec"].get("gateways", []):
            gw_ns, _, gw_name = gateway.rpartition("/")
            if gateway != "mesh" and find(objs, "Gateway", gw_name, gw_ns or namespace) is None:
                problems.append(f"{ref(vs)} names gateway {gateway!r}, which is not rendered")
        for route in vs["spec"]["http"]:
            for destination in (r["destination"] for r in route["route"]):
                svc = resolve_service(objs, destination["host"], namespace)
                port = destination.get("port", {}).get("number")
                if svc is None:
                    problems.append(
                        f"{ref(vs)} routes to host {destination['host']!r}, which is not a rendered Service"
                    )
                elif port not in [p["port"] for p in svc["spec"]["ports"]]:
                    problems.append(f"{ref(vs)} routes to port {port} of {ref(svc)}, which has no such port")
    return problems


def check_mesh_policy(objs: list[Obj]) -> list[str]:
    """One VirtualService carries the API's route policy for every client: bound to the ingress
    gateway and to `mesh`, for the public host and the Service's host, with no route narrowed to one
    gateway (check_retries and check_timeouts then hold for both). A mesh client calling
    housing-api.housing-api.svc would otherwise get no timeout and Istio's default retries of 503."""
    api = [vs for vs in of_kind(objs, "VirtualService") if any(
        resolve_service(objs, d["destination"]["host"], namespace_of(vs)) is not None
        for route in vs["spec"]["http"] for d in route["route"]
    )]  # fmt: skip
    if len(api) != 1:
        return [f"expected one VirtualService routing to the API, found {[ref(vs) for vs in api]}"]
    vs = api[0]
    spec, namespace = vs["spec"], namespace_of(vs)
    problems = []
    gateways = spec.get("gateways", [])
    if "mesh" not in gateways:
        problems.append(f"{ref(vs)} is not bound to mesh: clients inside the mesh get Istio's default retries")
    if not [g for g in gateways if g != "mesh"]:
        problems.append(f"{ref(vs)} is bound to no ingress gateway")
    fqdn = f"{API}.{namespace}.svc.cluster.local"
    if not any(resolve_service(objs, host, namespace) is not None for host in spec["hosts"]):
        problems.append(f"{ref(vs)} hosts {spec['hosts']} lack the cluster host {fqdn}")
    for route in spec["http"]:
        narrowed = [m["gateways"] for m in route.get("match", []) if "gateways" in m]
        if narrowed:
            problems.append(f"{ref(vs)} route {route.get('name', '?')} applies only to gateways {narrowed}")
    return problems


def check_retries(objs: list[Obj]) -> list[str]:
    """Every route sets a timeout and retries only connect-failure,refused-stream.

    Without an explicit policy Istio retries 503s by default; retrying 5xx or 429 would multiply
    load exactly when the service sheds it.
    """
    problems = []
    for vs in of_kind(objs, "VirtualService"):
        for route in vs["spec"]["http"]:
            where = f"{ref(vs)} route {route.get('name', '?')}"
            if "timeout" not in route:
                problems.append(f"{where} has no request timeout")
            retries = route.get("retries")
            if retries is None:
                problems.append(f"{where} has no retries block (Istio's default retries 503s)")
                continue
            retry_on = {c.strip() for c in retries.get("retryOn", "").split(",") if c.strip()}
            if retries.get("attempts", 0) > 0 and retry_on != SAFE_RETRY_ON:
                problems.append(f"{where} retryOn {sorted(retry_on)}, expected exactly {sorted(SAFE_RETRY_ON)}")
    return problems


def app_request_timeout_s(objs: list[Obj]) -> float:
    """The service's own request deadline: REQUEST_TIMEOUT_S from the rendered config, else its default."""
    for config in of_kind(objs, "ConfigMap"):
        if "REQUEST_TIMEOUT_S" in config.get("data", {}):
            return float(config["data"]["REQUEST_TIMEOUT_S"])
    return APP_REQUEST_TIMEOUT_S


def check_timeouts(objs: list[Obj]) -> list[str]:
    """Each route's timeout/perTryTimeout pair means what it says.

    Envoy retries a per-try timeout only when retryOn names it; ours does not (connect-failure,
    refused-stream), so a perTryTimeout shorter than `timeout` answers 504 by itself and `timeout`
    never applies. Either an attempt may use the whole budget (perTryTimeout == timeout), or every
    attempt fits in it. And the gateway must outwait the service's own deadline, so the service's
    503 with Retry-After reaches the client instead of a gateway 504.
    """
    problems = []
    deadline = app_request_timeout_s(objs)
    for vs in of_kind(objs, "VirtualService"):
        for route in vs["spec"]["http"]:
            where = f"{ref(vs)} route {route.get('name', '?')}"
            if "timeout" not in route:
                continue  # check_retries reports it
            timeout = duration_seconds(route["timeout"])
            retries = route.get("retries", {})
            per_try = duration_seconds(retries.get("perTryTimeout", route["timeout"]))
            tries = 1 + retries.get("attempts", 0)
            if per_try != timeout and per_try * tries > timeout:
                problems.append(
                    f"{where}: perTryTimeout {per_try:g} s x {tries} attempts exceeds timeout {timeout:g} s, so a "
                    f"per-try timeout answers 504 unretried and the {timeout:g} s timeout never applies"
                )
            if min(per_try, timeout) <= deadline:
                problems.append(
                    f"{where}: the gateway gives up after {min(per_try, timeout):g} s, not after the service's "
                    f"REQUEST_TIMEOUT_S ({deadline:g} s): clients get a gateway 504 instead of the service's 503"
                )
    return problems


def check_outlier_detection(objs: list[Obj]) -> list[str]:
    """Outlier detection that a slow request cannot trigger.

    The service answers a request past its deadline with 503, which Envoy counts both as a 5xx and
    as a gateway error: either count would eject a pod for being slow and pile its load onto the
    others. Both must be 0 explicitly (an unset consecutive5xxErrors means 5 in Envoy); ejection
    may count only local-origin failures (refused or reset connections, the gateway's own timeout).
    """
    problems = []
    for rule in of_kind(objs, "DestinationRule"):
        outlier = rule["spec"].get("trafficPolicy", {}).get("outlierDetection")
        if outlier is None:
            continue  # check_destination_rules reports it
        for field in ("consecutive5xxErrors", "consecutiveGatewayErrors"):
            if outlier.get(field, 5 if field == "consecutive5xxErrors" else 0) != 0:
                problems.append(
                    f"{ref(rule)} {field}={outlier.get(field, 'unset (5)')}: the service's 503 for a request past "
                    "its deadline would eject a slow but healthy pod"
                )
        if outlier.get("consecutiveLocalOriginFailures") and not outlier.get("splitExternalLocalOriginErrors"):
            problems.append(f"{ref(rule)} consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true")
    return problems


def _route_matches(vs: Obj) -> list[Obj]:
    return [m.get("uri", {}) for route in vs["spec"]["http"] for m in route.get("match", [{}])]


def _route_serves(matches: list[Obj], path: str) -> bool:
    return any(m == {} or m.get("exact") == path or path.startswith(m.get("prefix", "\0")) for m in matches)


def check_public_routes(objs: list[Obj]) -> list[str]:
    """The ingress serves exactly the public API: never /metrics or /livez."""
    services = of_kind(objs, "VirtualService")
    if not services:
        return ["no VirtualService rendered"]
    matches = [m for vs in services for m in _route_matches(vs)]
    problems = [f"no route serves {path}" for path in PUBLIC_PATHS if not _route_serves(matches, path)]
    problems += [f"the ingress exposes the internal {path}" for path in INTERNAL_PATHS if _route_serves(matches, path)]
    return problems


def check_destination_rules(objs: list[Obj]) -> list[str]:
    """The API's DestinationRule caps connections and ejects pods that fail at the gateway."""
    rules = of_kind(objs, "DestinationRule")
    if not rules:
        return ["no DestinationRule rendered"]
    problems = []
    for rule in rules:
        svc = resolve_service(objs, rule["spec"]["host"], namespace_of(rule))
        if svc is None:
            problems.append(f"{ref(rule)} host {rule['spec']['host']!r} is not a rendered Service")
        policy = rule["spec"].get("trafficPolicy", {})
        pool = policy.get("connectionPool", {})
        if not pool.get("tcp", {}).get("maxConnections") or not pool.get("http"):
            problems.append(f"{ref(rule)} sets no connectionPool limits")
        if "outlierDetection" not in policy:
            problems.append(f"{ref(rule)} has no outlierDetection")
    return problems


def check_prod_namespace(objs: list[Obj]) -> list[str]:
    """Prod brings its Namespace, with Istio injection, and puts every object in it."""
    namespaces = of_kind(objs, "Namespace")
    if len(namespaces) != 1:
        return [f"expected one Namespace, found {[ref(n) for n in namespaces]}"]
    name = namespaces[0]["metadata"]["name"]
    problems = [] if _istio_injected(objs, name) else [f"Namespace/{name} lacks istio-injection: enabled"]
    problems += [
        f"{ref(o)} is in namespace {namespace_of(o)!r}, not {name!r}"
        for o in objs
        if o["kind"] != "Namespace" and namespace_of(o) != name
    ]
    return problems


def check_dev(objs: list[Obj]) -> list[str]:
    """Dev: its own namespace, one replica, a locally loaded image, no HPA and no Istio."""
    problems = []
    deployment = api_deployment(objs)
    if deployment is None:
        return [f"no Deployment/{API}"]
    if namespace_of(deployment) in (None, "default") or not of_kind(objs, "Namespace"):
        problems.append("dev does not bring its own namespace")
    if deployment["spec"].get("replicas") != 1 or of_kind(objs, "HorizontalPodAutoscaler"):
        problems.append("dev should run exactly one API replica and no HPA")
    api = pod_spec(deployment)["containers"][0]
    if api["image"] != "housing-api:dev" or api.get("imagePullPolicy") not in (
        "IfNotPresent",
        "Never",
    ):
        problems.append(f"dev API image is {api['image']!r} pulled {api.get('imagePullPolicy')}")
    problems += [
        f"dev renders Istio object {ref(o)}" for o in objs if o["apiVersion"].startswith("networking.istio.io/")
    ]
    # No operator on a kind or minikube cluster: applying its kinds would fail.
    problems += [
        f"dev renders Prometheus Operator object {ref(o)}"
        for o in objs
        if o["apiVersion"].startswith("monitoring.coreos.com/")
    ]
    return problems


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


PINNED_MODEL = re.compile(r"models:/[A-Za-z0-9][A-Za-z0-9_.\-]*/[1-9][0-9]*")
"""A registered model version by number: immutable, like an image tag. An alias (@champion) moves."""


def check_prod_model(objs: list[Obj]) -> list[str]:
    """Prod serves a pinned registry version: an init container fetches MODEL_URI into a volume the
    API container reads (both see the same MODEL_URI and MODEL_STORE), and its calls to MLflow go
    around the Istio sidecar, which does not exist yet while init containers run. So they are https,
    checked against a mounted CA (MLFLOW_TRACKING_SERVER_CERT_PATH), never with TLS checks off."""
    deployment = api_deployment(objs)
    if deployment is None:
        return [f"no Deployment/{API}"]
    spec = pod_spec(deployment)
    api = spec["containers"][0]
    problems = []
    uri = config_value(objs, deployment, api, "MODEL_URI") or ""
    if not PINNED_MODEL.fullmatch(uri):
        problems.append(f"prod MODEL_URI {uri!r} is not a pinned registry version models:/<name>/<number>")
    fetch = next((c for c in spec.get("initContainers", []) if c["name"] == "fetch-model"), None)
    if fetch is None:
        return [*problems, "API pod has no fetch-model init container"]
    if config_value(objs, deployment, fetch, "MODEL_URI") != uri:
        problems.append("fetch-model and the API container see different MODEL_URI values")
    store = config_value(objs, deployment, api, "MODEL_STORE") or ""
    volumes = [{m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}.get(store) for c in (fetch, api)]
    if volumes[0] is None or volumes[0] != volumes[1]:
        problems.append(f"fetch-model and the API container do not share MODEL_STORE {store!r}: {volumes}")
    tracking = urlsplit(config_value(objs, deployment, fetch, "MLFLOW_TRACKING_URI") or "")
    if tracking.scheme != "https":
        problems.append(f"prod MLFLOW_TRACKING_URI is not https: {tracking.scheme or 'unset'}://")
    problems += _mlflow_ca_problems(objs, deployment, fetch)
    port = tracking.port or (443 if tracking.scheme == "https" else 80)
    excluded = deployment["spec"]["template"]["metadata"].get("annotations", {})
    if _istio_injected(objs, namespace_of(deployment)) and str(port) not in excluded.get(
        "traffic.sidecar.istio.io/excludeOutboundPorts", ""
    ).split(","):
        problems.append(f"fetch-model's MLflow port {port} is not excluded from the sidecar")
    return problems


ENVOY_MAX_HEADERS_BYTES = 60 * 1024  # Envoy's default max_request_headers_kb; it adds its own x-* headers on top
ISTIO_DEFAULT_IDLE_TIMEOUT_S = 3600.0  # a DestinationRule without connectionPool.http.idleTimeout


def app_setting(objs: list[Obj], key: str) -> float:
    """A numeric setting as the API container sees it: the rendered config, else Settings' default."""
    deployment = api_deployment(objs)
    assert deployment is not None
    configured = config_value(objs, deployment, pod_spec(deployment)["containers"][0], key)
    return float(configured) if configured else float(Settings.model_fields[key.lower()].default)


def check_connection_bounds(objs: list[Obj]) -> list[str]:
    """The app's keep-alive outlives the proxy's idle timeout, and its head limit admits what Envoy passes.

    The side that closes an idle keep-alive connection must be the proxy: when the app closes one
    that Envoy is reusing, the request Envoy just wrote on it is lost (docs/reliability.md, "The
    server layer").
    """
    keepalive = app_setting(objs, "KEEPALIVE_TIMEOUT_S")
    problems = []
    for rule in of_kind(objs, "DestinationRule"):
        http = rule["spec"].get("trafficPolicy", {}).get("connectionPool", {}).get("http", {})
        idle = duration_seconds(http["idleTimeout"]) if "idleTimeout" in http else ISTIO_DEFAULT_IDLE_TIMEOUT_S
        if keepalive <= idle:
            problems.append(
                f"KEEPALIVE_TIMEOUT_S {keepalive:g} s is not above {ref(rule)}'s idleTimeout {idle:g} s: "
                "the app would close connections Envoy may reuse"
            )
    if of_kind(objs, "DestinationRule") and app_setting(objs, "MAX_HEADER_BYTES") < ENVOY_MAX_HEADERS_BYTES + 4096:
        problems.append(f"MAX_HEADER_BYTES is below Envoy's {ENVOY_MAX_HEADERS_BYTES} bytes plus its own headers")
    return problems


def _mlflow_ca_problems(objs: list[Obj], deployment: Obj, fetch: Obj) -> list[str]:
    """fetch-model verifies the tracking server against a CA file that a volume of the pod provides."""
    if (config_value(objs, deployment, fetch, "MLFLOW_TRACKING_INSECURE_TLS") or "").lower() in ("true", "1"):
        return ["fetch-model sets MLFLOW_TRACKING_INSECURE_TLS: the registry's certificate is not checked"]
    cert = config_value(objs, deployment, fetch, "MLFLOW_TRACKING_SERVER_CERT_PATH")
    if not cert:
        return ["fetch-model has no MLFLOW_TRACKING_SERVER_CERT_PATH (the CA MLflow's client checks the registry with)"]
    volumes = {v["name"]: v for v in pod_spec(deployment).get("volumes", [])}
    for mount in fetch.get("volumeMounts", []):
        if cert.startswith(mount["mountPath"].rstrip("/") + "/"):
            volume = volumes.get(mount["name"], {})
            if volume.get("configMap", {}).get("optional") or volume.get("secret", {}).get("optional"):
                return [f"fetch-model's CA volume {mount['name']} is optional: a missing CA must stop the pod"]
            return []
    return [f"fetch-model's MLFLOW_TRACKING_SERVER_CERT_PATH {cert} is on no mounted volume"]


# --- Redis credentials, transport and the API's NetworkPolicy (issue 21 #10) -----------------------
REDIS_SECRET = "housing-api-redis-auth"
"""The Secret both the API and Redis read; dev renders a placeholder one, base and prod expect it to
exist in the cluster (docs/deployment.md, "Redis credentials")."""
REDIS_SECRET_KEYS = ("username", "password", "users.acl")
GATEWAY_PEER = ({"kubernetes.io/metadata.name": "istio-system"}, {"istio": "ingressgateway"})
PROMETHEUS_PEER = ({"kubernetes.io/metadata.name": "monitoring"}, {"app.kubernetes.io/name": "prometheus"})
DNS_PEER = ({"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"})
ISTIOD_PEER = ({"kubernetes.io/metadata.name": "istio-system"}, {"app": "istiod"})
# fetch-model's S3 artifact store: HTTPS to public addresses, the private and link-local ranges
# closed (components/registry-model), when it reads the optional S3 Secret.
S3_SECRET = "housing-api-s3"
PRIVATE_RANGES = ("10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16")
S3_PEER = ({"ipBlock": "0.0.0.0/0", "except": ",".join(PRIVATE_RANGES)}, {})
COMMAND_SECRET_FLAGS = ("--requirepass", "requirepass", "--pass", "-a", "auth", "rediscli_auth")


def _secret_values(objs: list[Obj]) -> set[str]:
    import base64

    values = set()
    for secret in of_kind(objs, "Secret"):
        # Not the user name: it is no secret, and it names things (the API's own Service) too.
        data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
        values |= {v for k, v in {**data, **secret.get("stringData", {})}.items() if k != "username"}
    return {v for v in values if len(v) >= 8}


def _secret_name(objs: list[Obj], reference: str) -> str:
    """The Secret a reference resolves to: a rendered (possibly hash-suffixed) one, else the name."""
    return next((reference for s in of_kind(objs, "Secret") if s["metadata"]["name"] == reference), reference)


def check_no_secret_in_config_or_command(objs: list[Obj]) -> list[str]:
    """No password in a ConfigMap, a command line, an env value or a URL: only in Secrets."""
    problems = []
    secrets = _secret_values(objs)
    for cm in of_kind(objs, "ConfigMap"):
        for key, value in cm.get("data", {}).items():
            if "PASSWORD" in key.upper() or any(s in str(value) for s in secrets):
                problems.append(f"{ref(cm)} holds a password in {key}")
            if "://" in str(value) and urlsplit(str(value)).password:
                problems.append(f"{ref(cm)} {key} is a URL with a password")
    for workload in workloads(objs):
        for name, container in all_containers(workload):
            words = [str(w) for w in container.get("command", []) + container.get("args", [])]
            tokens = {t.lower() for w in words for t in re.split(r"[\s=\"']+", w)}
            if flags := sorted(tokens & set(COMMAND_SECRET_FLAGS)) or any(s in w for s in secrets for w in words):
                problems.append(f"{ref(workload)} {name}: a password on the command line ({flags})")
            for env in container.get("env", []):
                if "PASSWORD" in env["name"] and not env["name"].endswith("_FILE") and "value" in env:
                    problems.append(f"{ref(workload)} {name}: {env['name']} is a plain value, not a secretKeyRef")
    return problems


def check_redis_auth(objs: list[Obj]) -> list[str]:
    """The API authenticates to Redis as the Secret's user with its password file, and Redis loads its
    ACL from the same Secret; the Secret is rendered (dev) or the one expected in the cluster."""
    deployment = api_deployment(objs)
    redis = redis_workload(objs)
    if deployment is None or redis is None:
        return ["no API or Redis Deployment"]
    problems = []
    rendered = {s["metadata"]["name"] for s in of_kind(objs, "Secret")}
    expected = {n for n in rendered if n.startswith(REDIS_SECRET)} or {REDIS_SECRET}
    api = pod_spec(deployment)["containers"][0]
    user = next((e for e in api.get("env", []) if e["name"] == "REDIS_USERNAME"), {})
    if user.get("valueFrom", {}).get("secretKeyRef", {}).get("name") not in expected:
        problems.append(f"REDIS_USERNAME is not a secretKeyRef to {sorted(expected)}")
    password_file = next((e.get("value", "") for e in api.get("env", []) if e["name"] == "REDIS_PASSWORD_FILE"), "")

    def secret_mount(workload: Obj, container: Obj, path: str, key: str) -> bool:
        volumes = {v["name"]: v.get("secret", {}) for v in pod_spec(workload).get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            secret = volumes.get(mount["name"], {})
            if secret.get("secretName") in expected and path.startswith(mount["mountPath"].rstrip("/") + "/"):
                items = {i["path"]: i["key"] for i in secret.get("items", [])} or {key: key}
                if items.get(path[len(mount["mountPath"].rstrip("/")) + 1 :]) == key:
                    return True
        return False

    if not password_file or not secret_mount(deployment, api, password_file, "password"):
        problems.append(
            f"REDIS_PASSWORD_FILE {password_file!r} is not the key password of a mounted {sorted(expected)}"
        )
    container = pod_spec(redis)["containers"][0]
    aclfile = flag_values(container.get("command", [])[1:] + container.get("args", [])).get("--aclfile", "")
    if not aclfile or not secret_mount(redis, container, aclfile, "users.acl"):
        problems.append(f"Redis --aclfile {aclfile!r} is not the key users.acl of a mounted {sorted(expected)}")
    for secret in of_kind(objs, "Secret"):
        if secret["metadata"]["name"] in expected and set(secret.get("data", {})) != set(REDIS_SECRET_KEYS):
            problems.append(f"{ref(secret)} has keys {sorted(secret.get('data', {}))}, not {REDIS_SECRET_KEYS}")
    return problems


def _peers(rule: Obj, side: str) -> list[tuple[dict[str, str], dict[str, str]]]:
    return [
        ({"ipBlock": p["ipBlock"]["cidr"], "except": ",".join(sorted(p["ipBlock"].get("except", [])))}, {})
        if "ipBlock" in p
        else (match_labels(p.get("namespaceSelector", {})), match_labels(p.get("podSelector", {})))
        for p in rule.get(side, [])
    ]


def check_api_network_policy(objs: list[Obj]) -> list[str]:
    """A NetworkPolicy selects the API pods: in from the Istio gateway and Prometheus only, out to
    Redis and DNS (and, in prod, istiod and the MLflow registry) only."""
    deployment = api_deployment(objs)
    if deployment is None:
        return [f"no Deployment/{API}"]
    policies = [
        p for p in of_kind(objs, "NetworkPolicy")
        if namespace_of(p) == namespace_of(deployment)
        and selects(match_labels(p["spec"]["podSelector"]), pod_labels(deployment))
    ]  # fmt: skip
    if len(policies) != 1:
        return [f"expected one NetworkPolicy selecting the API pods, found {[ref(p) for p in policies]}"]
    spec = policies[0]["spec"]
    problems = (
        [] if set(spec.get("policyTypes", [])) == {"Ingress", "Egress"} else ["policyTypes is not Ingress and Egress"]
    )
    ingress = [peer for rule in spec.get("ingress", []) for peer in _peers(rule, "from")]
    if any(not rule.get("from") for rule in spec.get("ingress", [])) or set(map(str, ingress)) != {
        str(GATEWAY_PEER),
        str(PROMETHEUS_PEER),
    }:
        problems.append(f"ingress admits {ingress}, not only the Istio gateway and Prometheus")
    egress = spec.get("egress", [])
    if any(not rule.get("to") for rule in egress):
        problems.append("an egress rule without `to` allows every destination")
    redis = [w for w in workloads(objs) if w["metadata"]["name"] == REDIS]
    allowed = {str(p) for rule in egress for p in _peers(rule, "to")}
    wanted = [DNS_PEER] + [({}, match_labels(w["spec"]["selector"])) for w in redis]
    if _istio_injected(objs, namespace_of(deployment)):
        wanted.append(ISTIOD_PEER)
    mlflow = config_value(objs, deployment, pod_spec(deployment)["containers"][0], "MLFLOW_TRACKING_URI")
    if any(
        s.get("secretRef", {}).get("name") == S3_SECRET
        for _, c in all_containers(deployment)
        for s in c.get("envFrom", [])
    ):
        wanted.append(S3_PEER)
    if mlflow:
        host = urlsplit(mlflow).hostname or ""
        wanted.append(({"kubernetes.io/metadata.name": host.split(".")[1]}, {}) if host.count(".") else ({}, {}))
    problems += [f"egress does not allow {peer}" for peer in wanted if str(peer) not in allowed]
    if extra := allowed - {str(p) for p in wanted}:
        problems.append(f"egress allows more than Redis, DNS, istiod, the registry and S3: {sorted(extra)}")
    return problems


def check_redis_transport(objs: list[Obj]) -> list[str]:
    """Prod: the API's Redis traffic is Istio mTLS: not excluded from the sidecar, Redis has a sidecar,
    and a STRICT PeerAuthentication refuses plaintext at the Redis pods."""
    deployment = api_deployment(objs)
    redis = redis_workload(objs)
    if deployment is None or redis is None:
        return ["no API or Redis Deployment"]
    problems = []
    excluded = deployment["spec"]["template"]["metadata"].get("annotations", {})
    if "6379" in excluded.get("traffic.sidecar.istio.io/excludeOutboundPorts", "").split(","):
        problems.append("port 6379 is excluded from the API's sidecar: Redis traffic is plaintext")
    meta = redis["spec"]["template"]["metadata"]
    if "false" in (
        meta.get("labels", {}).get("sidecar.istio.io/inject"),
        meta.get("annotations", {}).get("sidecar.istio.io/inject"),
    ):
        problems.append("the Redis pods have no sidecar: no mTLS to Redis")
    strict = [
        p for p in of_kind(objs, "PeerAuthentication")
        if p["spec"].get("mtls", {}).get("mode") == "STRICT"
        and selects(match_labels(p["spec"].get("selector", {})), pod_labels(redis))
    ]  # fmt: skip
    if not strict:
        problems.append("no STRICT PeerAuthentication selects the Redis pods")
    return problems


def check_dev_redis_secret(objs: list[Obj]) -> list[str]:
    """Dev's placeholder Secret: its ACL turns the default user off and gives the Secret's user the
    Secret's password."""
    import base64

    secret = next((s for s in of_kind(objs, "Secret") if s["metadata"]["name"].startswith(REDIS_SECRET)), None)
    if secret is None:
        return [f"dev renders no {REDIS_SECRET}"]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    lines = [line.split() for line in data.get("users.acl", "").splitlines() if line.strip()]
    problems = [] if ["user", "default", "off"] in lines else ["users.acl does not turn the default user off"]
    user = next((line for line in lines if line[:2] == ["user", data.get("username")]), [])
    if ">" + data.get("password", "") not in user:
        problems.append("users.acl does not give the Secret's user the Secret's password")
    return problems


# docs/capacity.md, "Redis memory": rows kept for the TTL at prod's largest fleet, cache rate 0.
BYTES_PER_ROW = 198  # one server's (Sentinel: every server holds every row); bench/redis_memory.py
NEW_ROWS_PER_POD_S = 180  # about 3,600 new rows/s at 20 pods (docs/capacity.md's table)


def check_redis_ha(objs: list[Obj]) -> list[str]:
    """Prod's Redis survives a node: a StatefulSet of at least 3 pods (server and sentinel each), one
    per node (required anti-affinity), a PDB letting one go at a time, and --maxmemory at least
    docs/capacity.md's formula for the HPA's maxReplicas: maxReplicas x new rows/s per pod x TTL x bytes."""
    redis = redis_workload(objs)
    if redis is None or redis["kind"] != "StatefulSet":
        return [f"Redis is {ref(redis) if redis else 'absent'}, not a StatefulSet"]
    problems = []
    if redis["spec"].get("replicas", 1) < 3:
        problems.append(f"{ref(redis)} has {redis['spec'].get('replicas', 1)} replicas: fewer than 3")
    labels = pod_labels(redis)
    terms = (
        pod_spec(redis)
        .get("affinity", {})
        .get("podAntiAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", [])
    )
    if not any(t.get("topologyKey") == "kubernetes.io/hostname" and selects(match_labels(t["labelSelector"]), labels)
               for t in terms):  # fmt: skip
        problems.append(f"{ref(redis)} has no required anti-affinity across nodes")
    pdbs = [p for p in of_kind(objs, "PodDisruptionBudget") if selects(match_labels(p["spec"]["selector"]), labels)]
    if [p["spec"].get("maxUnavailable") for p in pdbs] != [1]:
        problems.append(
            f"{ref(redis)} needs one PodDisruptionBudget with maxUnavailable 1, has {[ref(p) for p in pdbs]}"
        )
    if container_port(redis, "sentinel") is None:
        problems.append(f"{ref(redis)} runs no sentinel (a container port named sentinel)")
    hpa = next(iter(of_kind(objs, "HorizontalPodAutoscaler")), None)
    container = pod_spec(redis)["containers"][0]
    flags = flag_values(container.get("command", [])[1:] + container.get("args", []))
    if hpa is not None and "--maxmemory" in flags:
        ttl = float(_config(objs).get("CACHE_TTL_SECONDS", 3600))
        needed = hpa["spec"]["maxReplicas"] * NEW_ROWS_PER_POD_S * ttl * BYTES_PER_ROW
        if redis_bytes(flags["--maxmemory"]) < needed:
            problems.append(f"--maxmemory {flags['--maxmemory']} is below docs/capacity.md's {needed / 2**20:.0f} MiB")
    return problems


def check_redis_exporter(objs: list[Obj]) -> list[str]:
    """Prod's Redis pods run prometheus-redis-exporter, Istio merges its metrics into 15020, a
    PodMonitor scrapes that as job housing-api-redis (the alerts' job), and the Redis pods' NetworkPolicy
    lets Prometheus in on 15020."""
    redis = redis_workload(objs)
    if redis is None:
        return ["no Redis workload"]
    problems = []
    exporter = next((c for c in pod_spec(redis)["containers"] if "redis_exporter" in c["image"]), None)
    if exporter is None:
        return [f"{ref(redis)} runs no prometheus-redis-exporter"]
    annotations = redis["spec"]["template"]["metadata"].get("annotations", {})
    ports = {str(p["containerPort"]) for p in exporter.get("ports", [])}
    if annotations.get("prometheus.io/port") not in ports:
        problems.append(f"{ref(redis)} prometheus.io/port is not the exporter's port {sorted(ports)}")
    problems += _istio_merges_metrics(objs, redis)
    monitor = next(
        (m for m in of_kind(objs, "PodMonitor") if selects(match_labels(m["spec"]["selector"]), pod_labels(redis))),
        None,
    )
    if monitor is None:
        return [*problems, f"no PodMonitor selects the pods of {ref(redis)}"]
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        jobs = [r.get("replacement") for r in endpoint.get("relabelings", []) if r.get("targetLabel") == "job"]
        if jobs != [REDIS_JOB]:
            problems.append(f"{ref(monitor)} gives job {jobs}, the alerts select {REDIS_JOB!r}")
        if not _merged_address(endpoint):
            problems.append(f"{ref(monitor)} does not scrape the merged {ISTIO_MERGED_PORT}")
    rules = _named(objs, "NetworkPolicy", REDIS)["spec"].get("ingress", [])
    if not any(str(PROMETHEUS_PEER) in map(str, _peers(r, "from")) and ISTIO_MERGED_PORT in
               [p["port"] for p in r.get("ports", [])] for r in rules):  # fmt: skip
        problems.append(f"the Redis pods do not admit Prometheus on {ISTIO_MERGED_PORT}")
    return problems


def check_sentinel_ports(objs: list[Obj]) -> list[str]:
    """With REDIS_MODE=sentinel, the API pods may reach the sentinels' port 26379, and the Redis pods
    admit it from the API and each other (replication and the sentinels' own traffic)."""
    deployment, redis = api_deployment(objs), redis_workload(objs)
    if deployment is None or redis is None:
        return ["no API or Redis workload"]
    if config_value(objs, deployment, pod_spec(deployment)["containers"][0], "REDIS_MODE") != "sentinel":
        return []
    redis_peer = str(({}, match_labels(redis["spec"]["selector"])))
    problems = []
    api_policy = _named(objs, "NetworkPolicy", API)["spec"]
    api_ports = {p["port"] for r in api_policy.get("egress", []) if redis_peer in map(str, _peers(r, "to"))
                 for p in r.get("ports", [])}  # fmt: skip
    if not {6379, 26379} <= api_ports:
        problems.append(f"the API's egress to Redis allows ports {sorted(api_ports, key=str)}, not 6379 and 26379")
    for pods, who in ((pod_labels(deployment), "the API"), (pod_labels(redis), "the Redis pods")):
        ports = {p["port"] for r in _named(objs, "NetworkPolicy", REDIS)["spec"].get("ingress", [])
                 if any(not ns and selects(sel, pods) for ns, sel in _peers(r, "from"))
                 for p in r.get("ports", [])}  # fmt: skip
        if "sentinel" not in ports or "redis" not in ports:
            problems.append(f"the Redis pods admit ports {sorted(ports, key=str)} from {who}, not redis and sentinel")
    return problems


COMMON_CHECKS: list[Check] = [
    check_schemas,
    check_service_selectors,
    check_probe_ports,
    check_api_pod,
    check_container_security,
    check_api_cpu,
    check_image_tags,
    check_pdbs,
    check_redis_url,
    check_redis_is_a_cache,
    check_graceful_shutdown,
    check_labels,
    check_no_secret_in_config_or_command,
    check_redis_auth,
    check_api_network_policy,
]
PROD_CHECKS: list[Check] = [
    check_prod_images,
    lambda objs: check_hpa_targets(objs, min_replicas=2),
    check_virtual_services,
    check_mesh_policy,
    check_retries,
    check_timeouts,
    check_outlier_detection,
    check_public_routes,
    check_destination_rules,
    check_prod_namespace,
    check_grafana_dashboard,
    check_pod_monitors,
    check_gateway_monitor,
    check_monitoring_selector,
    check_prometheus_rule,
    check_prod_model,
    check_connection_bounds,
    check_redis_transport,
    check_redis_ha,
    check_sentinel_ports,
    check_redis_exporter,
]


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


def broken_by(
    objs: list[Any], mutate: Callable[[list[Any]], None], check: Callable[[list[Any]], list[str]]
) -> list[str]:
    """What `check` reports on a copy of `objs` broken by `mutate` (the shared render stays intact)."""
    broken = copy.deepcopy(objs)
    mutate(broken)
    return check(broken)
