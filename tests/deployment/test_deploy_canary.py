"""Prod's Flagger canary (.k8s/components/flagger-canary), read as rendered manifests.

No Flagger CRD schema is available offline, so shapes taken from Flagger's documented API
(flagger.app/v1beta1 Canary and MetricTemplate) stand in for one; then the invariants: the Canary
targets the real Deployment and HPA, each metric names a rendered MetricTemplate, every query
(MetricTemplates, the canary alert, the dashboard's per-version rows) reads only series and labels
the service exports, the canary's pod regex never matches the primary's pods, everything that
selects the API's pods selects Flagger's primary too, and dev renders no Flagger object. Each check
is shown to fire on a mutation of the render.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import KUBECTL_INSTALL, ROOT
from helpers.k8s.mutations import broken_by

from housing_api_testing.flagger import CANARY_POD, canaries, generated, metric_query
from housing_api_testing.prom import (
    AWAITED,
    AWAITED_LABELS,
    PrometheusUnavailable,
    exported_series,
    load_dashboard,
    metric_names,
    promtool_binary,
    queries,
)

# kubectl renders the overlays and promtool parses the queries: child processes (tests/kinds.py).
pytestmark = pytest.mark.integration

Obj = dict[str, Any]
Check = Callable[[list[Obj]], list[str]]

API = "housing-api"
NAMESPACE = "housing-api"
ALERTS = ROOT / "prometheus" / "alerts.yaml"
CANARY_ALERT = "HousingApiCanaryWorse"
# Pod names as Kubernetes makes them: <deployment>-<replicaset hash>-<pod id>.
CANARY_PODS = ("housing-api-7f9c4d8b6-ab12c", "housing-api-5d8b6c7f9-xy34z")
PRIMARY_PODS = ("housing-api-primary-7f9c4d8b6-ab12c", "housing-api-primary-5d8b6c7f9-xy34z")
# The SLOs the thresholds restate (prometheus/alerts.yaml): 5xx ratio and p99 in milliseconds.
SLO_5XX_RATIO = 0.001
SLO_P99_MS = 50
MAX_FAILED_CHECKS = 5  # a failing canary keeps its share of traffic at most this many analysis intervals
# Labels Prometheus adds to every scraped series (the target's), and a histogram's bucket label.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})

# Flagger's documented fields that we use, as a compact shape: a mapping allows only these keys
# ("key!" = required), a one-item list is a non-empty array of that shape, a leaf names a type.
SHAPES = yaml.safe_load("""
Canary:
  provider: istio
  targetRef!: {apiVersion!: string, kind!: Deployment, name!: string}
  autoscalerRef: {apiVersion!: string, kind!: HorizontalPodAutoscaler, name!: string}
  progressDeadlineSeconds: count
  skipAnalysis: bool
  service!:
    port!: port
    portName: string
    targetPort: port
    appProtocol: string
    gateways: [string]
    hosts: [string]
    match: [{uri: {exact: string, prefix: string, regex: string}}]
    timeout: duration
    retries: {attempts!: count, perTryTimeout: duration, retryOn: string}
    trafficPolicy: object
  analysis!:
    interval!: duration
    threshold!: count
    stepWeights: [percent]
    stepWeight: percent
    maxWeight: percent
    iterations: count
    mirror: bool
    mirrorWeight: percent
    metrics!:
      - name!: string
        templateRef: {name!: string, namespace: string}
        thresholdRange!: {min: number, max: number}
        interval: duration
MetricTemplate:
  provider!: {type!: prometheus, address!: url}
  query!: string
""")


# --- rendering ---------------------------------------------------------------------------------


def _kubectl() -> str:
    found = shutil.which("kubectl", path=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    if found is None:
        pytest.skip(f"no kubectl to render .k8s; {KUBECTL_INSTALL}")
    return found


def render(overlay: str) -> list[Obj]:
    done = subprocess.run(
        [_kubectl(), "kustomize", str(ROOT / ".k8s" / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def prod() -> list[Obj]:
    return render("prod")


@pytest.fixture(scope="module")
def dev() -> list[Obj]:
    return render("dev")


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in of_kind(objs, kind) if o["metadata"]["name"] == name), None)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- the shapes ----------------------------------------------------------------------------------

_DURATION = re.compile(r"\d+(ms|s|m|h)")
_LEAVES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str) and v != "",
    "bool": lambda v: isinstance(v, bool),
    "count": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "percent": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 100,
    "port": lambda v: (isinstance(v, int) and 0 < v < 65536) or (isinstance(v, str) and re.fullmatch(r"[a-z0-9-]+", v)),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "duration": lambda v: isinstance(v, str) and bool(_DURATION.fullmatch(v)),
    "url": lambda v: isinstance(v, str) and bool(re.fullmatch(r"https?://[\w.-]+(:\d+)?/?", v)),
    "object": lambda v: isinstance(v, dict),
}


def shape_problems(value: Any, shape: Any, where: str) -> list[str]:
    """Where `value` departs from `shape` (see SHAPES)."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{where}: not an object"]
        fields = {k.rstrip("!"): v for k, v in shape.items()}
        problems = [f"{where}: unknown field {k!r}" for k in value if k not in fields]
        problems += [f"{where}: {k[:-1]} is required" for k in shape if k.endswith("!") and k[:-1] not in value]
        for key, sub in fields.items():
            if key in value:
                problems += shape_problems(value[key], sub, f"{where}.{key}")
        return problems
    if isinstance(shape, list):
        if not isinstance(value, list) or not value:
            return [f"{where}: not a non-empty list"]
        return [p for i, item in enumerate(value) for p in shape_problems(item, shape[0], f"{where}[{i}]")]
    if shape in _LEAVES:
        return [] if _LEAVES[shape](value) else [f"{where}: {value!r} is not a {shape}"]
    return [] if value == shape else [f"{where}: {value!r}, expected {shape!r}"]


def check_flagger_shapes(objs: list[Obj]) -> list[str]:
    """Every Flagger object is flagger.app/v1beta1 and has the documented shape."""
    problems = []
    for obj in objs:
        if obj["apiVersion"].startswith("flagger.app/"):
            where = f"{obj['kind']}/{obj['metadata']['name']}"
            if obj["apiVersion"] != "flagger.app/v1beta1" or obj["kind"] not in SHAPES:
                problems.append(f"{where}: {obj['apiVersion']} {obj['kind']} is not a Flagger kind we know")
                continue
            problems += shape_problems(obj["spec"], SHAPES[obj["kind"]], f"{where}.spec")
            range_ = [m.get("thresholdRange", {}) for m in obj["spec"].get("analysis", {}).get("metrics", [])]
            problems += [f"{where}: a thresholdRange without min or max" for r in range_ if not r]
    return problems


# --- the Canary against what is rendered -----------------------------------------------------------


def the_canary(objs: list[Obj]) -> Obj:
    found = canaries(objs)
    assert len(found) == 1, [c["metadata"]["name"] for c in found]
    return found[0]


def check_canary_refs(objs: list[Obj]) -> list[str]:
    """targetRef is the API's Deployment, autoscalerRef the HPA that scales it, the service port the
    one its container serves, and each metric's templateRef a rendered MetricTemplate."""
    canary, problems = the_canary(objs), []
    spec = canary["spec"]
    target = named(objs, "Deployment", spec["targetRef"]["name"])
    if target is None or spec["targetRef"]["name"] != API or spec["targetRef"]["apiVersion"] != target["apiVersion"]:
        return [f"targetRef {spec['targetRef']} is not the rendered Deployment/{API}"]
    hpa = named(objs, "HorizontalPodAutoscaler", spec.get("autoscalerRef", {}).get("name", ""))
    if hpa is None or hpa["apiVersion"] != spec["autoscalerRef"]["apiVersion"]:
        problems.append(f"autoscalerRef {spec.get('autoscalerRef')} is not a rendered HPA")
    elif hpa["spec"]["scaleTargetRef"]["name"] != target["metadata"]["name"]:
        problems.append(f"autoscalerRef's HPA scales {hpa['spec']['scaleTargetRef']['name']}, not the target")
    ports = [p for c in target["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
    wanted = spec["service"].get("targetPort", spec["service"]["port"])
    if not any(wanted in (p.get("name"), p["containerPort"]) for p in ports):
        problems.append(f"service targetPort {wanted!r} is no port of the target's containers")
    templates = {(t["metadata"]["name"], t["metadata"].get("namespace")) for t in of_kind(objs, "MetricTemplate")}
    for metric in spec["analysis"]["metrics"]:
        ref = metric.get("templateRef")
        if ref and (ref["name"], ref.get("namespace", canary["metadata"].get("namespace"))) not in templates:
            problems.append(f"metric {metric['name']} names MetricTemplate {ref['name']}, which is not rendered")
    return problems


def check_gateways(objs: list[Obj]) -> list[str]:
    """The Canary's route is bound to a rendered Gateway and to the mesh (see tests/helpers/k8s/istio.py's
    check_mesh_policy, which holds the VirtualService Flagger generates to the rest)."""
    service = the_canary(objs)["spec"]["service"]
    gateways = service.get("gateways", [])
    problems = [f"gateway {g!r} is not rendered" for g in gateways if g != "mesh" and not named(objs, "Gateway", g)]
    if "mesh" not in gateways:
        problems.append("the route is not bound to mesh: clients inside the mesh get Istio's default retries")
    return problems


def check_thresholds(objs: list[Obj]) -> list[str]:
    """The 5xx and latency checks hold the canary to the SLOs; every metric is bounded above."""
    limits = {
        m.get("templateRef", {}).get("name"): m["thresholdRange"]
        for m in the_canary(objs)["spec"]["analysis"]["metrics"]
    }
    problems = []
    if limits.get("housing-api-5xx-ratio", {}).get("max") != SLO_5XX_RATIO:
        problems.append(f"the 5xx check's max is not the availability SLO's {SLO_5XX_RATIO}")
    if limits.get("housing-api-p99-latency", {}).get("max") != SLO_P99_MS:
        problems.append(f"the p99 check's max is not the latency SLO's {SLO_P99_MS} ms")
    problems += [f"{name}: no max" for name, r in limits.items() if "max" not in r]
    return problems


def check_progression(objs: list[Obj]) -> list[str]:
    """Steps that grow to at most 100 %, mirroring (Istio only) before the first step, and a
    rollback within MAX_FAILED_CHECKS failed checks: Flagger holds a failing canary at its current
    weight until the threshold, so the threshold is how many intervals clients keep getting it."""
    analysis, problems = the_canary(objs)["spec"]["analysis"], []
    steps = analysis.get("stepWeights", [])
    if not steps or steps != sorted(set(steps)) or steps[-1] > 100:
        problems.append(f"stepWeights {steps} do not grow strictly to at most 100")
    if not analysis.get("mirror") or the_canary(objs)["spec"].get("provider") != "istio":
        problems.append("no traffic mirroring (Flagger mirrors on Istio only)")
    if analysis.get("threshold", 0) > MAX_FAILED_CHECKS:
        problems.append(
            f"threshold {analysis.get('threshold')}: a failing canary keeps its traffic that many intervals"
        )
    return problems


# --- the queries ---------------------------------------------------------------------------------

_MATCHERS = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}")
_GROUPING = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)")


def template_queries(objs: list[Obj]) -> dict[str, str]:
    """Each MetricTemplate's query as Flagger sends it for the Canary (interval: the metric's own)."""
    canary = the_canary(objs)
    intervals = {
        m.get("templateRef", {}).get("name"): m.get("interval", "1m") for m in canary["spec"]["analysis"]["metrics"]
    }
    target = canary["spec"]["targetRef"]["name"]
    return {
        t["metadata"]["name"]: metric_query(t, NAMESPACE, target, intervals.get(t["metadata"]["name"], "1m"))
        for t in of_kind(objs, "MetricTemplate")
    }


def series_problems(expr: str) -> list[str]:
    """Series and labels the service does not export (or will not once issue 25's service side lands)."""
    exported = {**exported_series(), **{name: labels for name, (labels, _) in AWAITED.items()}}
    awaited = {}
    for series, label in AWAITED_LABELS:
        awaited.setdefault(series, set()).add(label)
    problems = [f"{name} is not exported" for name in sorted(metric_names(expr) - set(exported))]
    readable: set[str] = set(TARGET_LABELS) | {"le"}
    for name in metric_names(expr) & set(exported):
        readable |= exported[name] | awaited.get(name, set())
    for name, matchers in _MATCHERS.findall(expr):
        labels = set(re.findall(r"(\w+)\s*[=!]~?", matchers))
        allowed = exported.get(name, frozenset()) | awaited.get(name, set()) | TARGET_LABELS
        problems += [f"{name} has no label {label}" for label in sorted(labels - allowed)]
    for group in _GROUPING.findall(expr):
        used = {label.strip() for label in group.split(",") if label.strip()}
        problems += [f"grouping by {label}, which no series read has" for label in sorted(used - readable)]
    return problems


def check_queries_read_exported_series(objs: list[Obj]) -> list[str]:
    return [f"{name}: {p}" for name, query in template_queries(objs).items() for p in series_problems(query)]


def check_queries_select_canary_pods_only(objs: list[Obj]) -> list[str]:
    """Each query selects its namespace and the canary's pods by Flagger's regex, which must match
    every canary pod name and no primary pod name."""
    problems = []
    for name, query in template_queries(objs).items():
        for metric, matchers in _MATCHERS.findall(query):
            pods = re.search(r'\bpod=~"([^"]*)"', matchers)
            if f'namespace="{NAMESPACE}"' not in matchers or pods is None:
                problems.append(f"{name}: {metric} is not selected by namespace and pod")
                continue
            problems += [f"{name}: misses canary pod {p}" for p in CANARY_PODS if not re.fullmatch(pods[1], p)]
            problems += [f"{name}: matches primary pod {p}" for p in PRIMARY_PODS if re.fullmatch(pods[1], p)]
    return problems


def promql_problems(exprs: dict[str, str], workdir: Path) -> list[str]:
    """Prometheus's own parser on each expression (promtool check rules on one recording rule each)."""
    rules = {
        "groups": [{"name": "q", "rules": [{"record": f"q:{i}", "expr": e} for i, e in enumerate(exprs.values())]}]
    }
    path = workdir / "queries.yml"
    path.write_text(yaml.safe_dump(rules))
    try:
        promtool = promtool_binary()
    except PrometheusUnavailable as exc:  # as test_alerts.py: skipped here, a failure on CI
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the promtool checks: {exc}")
        pytest.skip(str(exc))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    return [] if done.returncode == 0 else [done.stdout + done.stderr]


# --- what must select the primary too --------------------------------------------------------------


def check_selectors_cover_the_primary(objs: list[Obj]) -> list[str]:
    """Whatever selects the canary target's pods (PDB, NetworkPolicies and their peers, PodMonitor)
    selects the pods of the primary Flagger makes from it, and the PodMonitor gives both one job."""
    with_flagger = objs + generated(objs)
    target, primary = (named(with_flagger, "Deployment", n) for n in (API, f"{API}-primary"))
    assert target is not None and primary is not None
    pods = {name: w["spec"]["template"]["metadata"]["labels"] for name, w in ((API, target), ("primary", primary))}
    problems = []
    for obj in objs:
        for where, selector in _pod_selectors(obj):
            if selects(selector, pods[API]) and not selects(selector, pods["primary"]):
                problems.append(
                    f"{obj['kind']}/{obj['metadata']['name']} {where} selects the canary's pods, not the primary's"
                )
        job_label = obj["spec"].get("jobLabel") if obj["kind"] == "PodMonitor" else None
        if job_label and pods[API].get(job_label) != pods["primary"].get(job_label):
            problems.append(
                f"PodMonitor/{obj['metadata']['name']} jobLabel {job_label} differs between primary and canary"
            )
    return problems


def _pod_selectors(obj: Obj) -> list[tuple[str, dict[str, str]]]:
    spec = obj.get("spec", {})
    found = []
    if obj["kind"] in ("PodDisruptionBudget", "PodMonitor"):
        found.append(("selector", spec.get("selector", {}).get("matchLabels", {})))
    if obj["kind"] == "NetworkPolicy":
        found.append(("podSelector", spec.get("podSelector", {}).get("matchLabels", {})))
        for side, key in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(side, []):
                found += [(f"{side} peer", p.get("podSelector", {}).get("matchLabels", {})) for p in rule.get(key, [])]
    return found


def check_flagger_owns_the_routing(objs: list[Obj]) -> list[str]:
    """Prod renders no Service, VirtualService or DestinationRule of the API: Flagger generates them,
    and an apply of ours would undo its routing (the apex Service's selector, the weights)."""
    names = {API, f"{API}-primary", f"{API}-canary"}
    kinds = ("Service", "VirtualService", "DestinationRule")
    return [
        f"{o['kind']}/{o['metadata']['name']} is Flagger's to generate"
        for o in objs
        if o["kind"] in kinds and o["metadata"]["name"] in names
    ]


def check_stable_version_reaches_the_canary(objs: list[Obj]) -> list[str]:
    """STABLE_MODEL_VERSION is in the ConfigMap the target reads (the release sets it; Flagger
    tracks the ConfigMap, so changing it starts an analysis)."""
    target = named(objs, "Deployment", API)
    assert target is not None
    refs = {
        s["configMapRef"]["name"]
        for c in target["spec"]["template"]["spec"]["containers"]
        for s in c.get("envFrom", [])
        if "configMapRef" in s
    }
    if not any(
        "STABLE_MODEL_VERSION" in cm.get("data", {})
        for cm in of_kind(objs, "ConfigMap")
        if cm["metadata"]["name"] in refs
    ):
        return ["the target's ConfigMaps have no STABLE_MODEL_VERSION"]
    return []


def check_alerts_follow_both_deployments(_: list[Obj]) -> list[str]:
    """Alerts that name the Deployment, the HPA or the edge's destination match Flagger's names."""
    return alert_name_problems(ALERTS.read_text())


def alert_name_problems(text: str) -> list[str]:
    problems = []
    for label, names in (("deployment", (API, f"{API}-primary")), ("horizontalpodautoscaler", (API, f"{API}-primary")),
                         ("destination_service_name", (API, f"{API}-primary", f"{API}-canary"))):  # fmt: skip
        for op, value in re.findall(rf'\b{label}(=~?)"([^"]*)"', text):
            pattern = value if op == "=~" else re.escape(value)
            problems += [f'{label}{op}"{value}" misses {n}' for n in names if not re.fullmatch(pattern, n)]
    return problems


# --- models from S3 --------------------------------------------------------------------------------

S3_SECRET = "housing-api-s3"
HTTPS = 443
PRIVATE_RANGES = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"}


def check_s3_access(objs: list[Obj]) -> list[str]:
    """fetch-model, and only it, may read the optional S3 Secret; the pods run as a ServiceAccount
    (for workload identity) without a Kubernetes API token; fetch-model's HTTPS bypasses a sidecar
    that does not exist yet (excluded port, or Istio's own uid 1337); egress on 443 reaches public
    addresses only."""
    pod = _named_obj(objs, "Deployment")["spec"]["template"]
    problems = []
    containers = {c["name"]: c for c in pod["spec"]["initContainers"] + pod["spec"]["containers"]}
    readers = sorted(
        n
        for n, c in containers.items()
        for s in c.get("envFrom", [])
        if s.get("secretRef", {}).get("name") == S3_SECRET
    )
    if readers != ["fetch-model"]:
        problems.append(f"the S3 Secret is read by {readers}, not fetch-model alone")
    if not all(
        s["secretRef"].get("optional") for s in containers["fetch-model"].get("envFrom", []) if "secretRef" in s
    ):
        problems.append("the S3 Secret is not optional: a pod without it would not start")
    account = named(objs, "ServiceAccount", pod["spec"].get("serviceAccountName", "default"))
    if account is None or account.get("automountServiceAccountToken") is not False:
        problems.append("the pods' ServiceAccount is not rendered, or mounts a Kubernetes API token")
    excluded = pod["metadata"].get("annotations", {}).get("traffic.sidecar.istio.io/excludeOutboundPorts", "")
    if (
        str(HTTPS) not in excluded.split(",")
        and containers["fetch-model"].get("securityContext", {}).get("runAsUser") != 1337
    ):
        problems.append("fetch-model's HTTPS goes to a sidecar that is not running yet (no native sidecar)")
    egress = _named_obj(objs, "NetworkPolicy")["spec"]["egress"]
    blocks = [
        p["ipBlock"]
        for r in egress
        if {x["port"] for x in r.get("ports", [])} == {HTTPS}
        for p in r.get("to", [])
        if "ipBlock" in p
    ]
    if not blocks or any(not set(b.get("except", [])) >= PRIVATE_RANGES for b in blocks):
        problems.append(f"egress on {HTTPS} is missing or reaches private addresses: {blocks}")
    return problems


CHECKS: list[Check] = [
    check_flagger_shapes,
    check_canary_refs,
    check_gateways,
    check_thresholds,
    check_progression,
    check_queries_read_exported_series,
    check_queries_select_canary_pods_only,
    check_selectors_cover_the_primary,
    check_flagger_owns_the_routing,
    check_stable_version_reaches_the_canary,
    check_alerts_follow_both_deployments,
    check_s3_access,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_prod_keeps_the_canary_invariants(prod: list[Obj], check: Check) -> None:
    assert check(prod) == []


def test_dev_keeps_a_single_deployment_and_no_flagger_object(dev: list[Obj]) -> None:
    assert not [o for o in dev if o["apiVersion"].startswith("flagger.app/")]
    assert sorted(d["metadata"]["name"] for d in of_kind(dev, "Deployment")) == [API, "housing-api-redis"]
    assert named(dev, "Service", API) is not None


def test_flagger_substitutes_every_variable_of_every_template(prod: list[Obj]) -> None:
    for name, query in template_queries(prod).items():
        assert "{{" not in query and ("[1m]" in query or "[2m]" in query), (name, query)
    with pytest.raises(KeyError):
        metric_query({"spec": {"query": "{{ variables.missing }}"}}, NAMESPACE, API, "1m")


def test_prometheus_parses_every_query(prod: list[Obj], tmp_path: Path) -> None:
    dashboard = {
        f"{p['title']} {t['refId']}": t["expr"] for p, t in queries(load_dashboard()) if "model_version" in t["expr"]
    }
    dashboard = {
        k: re.sub(r"\$__rate_interval", "1m", re.sub(r"\$(job|namespace)", ".*", v)) for k, v in dashboard.items()
    }
    assert promql_problems({**template_queries(prod), **dashboard}, tmp_path) == []
    assert promql_problems({"broken": "sum(rate(http_requests_total[1m])"}, tmp_path) != []


def test_the_canary_alert_and_the_per_version_rows_read_exported_series() -> None:
    alert = next(
        r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if r.get("alert") == CANARY_ALERT
    )
    per_version = [t["expr"] for _, t in queries(load_dashboard()) if "model_version" in t["expr"]]
    assert len(per_version) >= 6
    for expr in [alert["expr"], *per_version]:
        assert series_problems(expr) == [], expr


def test_the_series_check_notices_an_unknown_metric_label_or_grouping() -> None:
    assert series_problems('sum by (model_version) (rate(http_requests_total{handler="/predict"}[1m]))') == []
    assert series_problems("rate(housing_api_predictions_total[1m])") == [
        "housing_api_predictions_total is not exported"
    ]
    assert series_problems('rate(http_requests_total{route="/predict"}[1m])') == [
        "http_requests_total has no label route"
    ]
    assert series_problems("sum by (version) (rate(http_requests_total[1m]))") != []


# --- each check fires ------------------------------------------------------------------------------


def _canary(objs: list[Obj]) -> Obj:
    return the_canary(objs)


def _template(objs: list[Obj], name: str = "housing-api-5xx-ratio") -> Obj:
    found = named(objs, "MetricTemplate", name)
    assert found is not None
    return found


def _set_query(objs: list[Obj], old: str, new: str) -> None:
    template = _template(objs)
    assert old in template["spec"]["query"]
    template["spec"]["query"] = template["spec"]["query"].replace(old, new)


MUTATIONS: list[tuple[str, Check, Callable[[list[Obj]], None], str]] = [
    (
        "typo",
        check_flagger_shapes,
        lambda o: _canary(o)["spec"]["analysis"].update(stepWeigths=[5]),
        "unknown field 'stepWeigths'",
    ),
    (
        "no-threshold-range",
        check_flagger_shapes,
        lambda o: _canary(o)["spec"]["analysis"]["metrics"][0].pop("thresholdRange"),
        "thresholdRange is required",
    ),
    (
        "empty-threshold-range",
        check_flagger_shapes,
        lambda o: _canary(o)["spec"]["analysis"]["metrics"][0].update(thresholdRange={}),
        "without min or max",
    ),
    (
        "weight-string",
        check_flagger_shapes,
        lambda o: _canary(o)["spec"]["analysis"].update(stepWeights=["5"]),
        "is not a percent",
    ),
    (
        "provider-not-prometheus",
        check_flagger_shapes,
        lambda o: _template(o)["spec"]["provider"].update(type="datadog"),
        "expected 'prometheus'",
    ),
    (
        "target-elsewhere",
        check_canary_refs,
        lambda o: _canary(o)["spec"]["targetRef"].update(name="housing-api-v2"),
        "is not the rendered Deployment",
    ),
    (
        "hpa-elsewhere",
        check_canary_refs,
        lambda o: _canary(o)["spec"]["autoscalerRef"].update(name="other"),
        "is not a rendered HPA",
    ),
    (
        "target-port",
        check_canary_refs,
        lambda o: _canary(o)["spec"]["service"].update(targetPort="metrics"),
        "no port of the target",
    ),
    (
        "template-missing",
        check_canary_refs,
        lambda o: _canary(o)["spec"]["analysis"]["metrics"][0]["templateRef"].update(name="gone"),
        "which is not rendered",
    ),
    (
        "gateway-missing",
        check_gateways,
        lambda o: _canary(o)["spec"]["service"].update(gateways=["public", "mesh"]),
        "'public' is not rendered",
    ),
    (
        "mesh-missing",
        check_gateways,
        lambda o: _canary(o)["spec"]["service"].update(gateways=["housing-api"]),
        "not bound to mesh",
    ),
    (
        "5xx-above-slo",
        check_thresholds,
        lambda o: _canary(o)["spec"]["analysis"]["metrics"][0]["thresholdRange"].update(max=0.01),
        "availability SLO",
    ),
    (
        "unbounded",
        check_thresholds,
        lambda o: _canary(o)["spec"]["analysis"]["metrics"][2].update(thresholdRange={"min": 0}),
        "no max",
    ),
    (
        "steps-shrink",
        check_progression,
        lambda o: _canary(o)["spec"]["analysis"].update(stepWeights=[50, 10]),
        "do not grow",
    ),
    (
        "no-mirror",
        check_progression,
        lambda o: _canary(o)["spec"]["analysis"].update(mirror=False),
        "no traffic mirroring",
    ),
    (
        "threshold-too-high",
        check_progression,
        lambda o: _canary(o)["spec"]["analysis"].update(threshold=9),
        "a failing canary keeps its traffic",
    ),
    (
        "unknown-metric",
        check_queries_read_exported_series,
        lambda o: _set_query(o, "http_requests_total", "istio_requests_total"),
        "is not exported",
    ),
    (
        "unknown-label",
        check_queries_read_exported_series,
        lambda o: _set_query(o, 'handler="/predict"', 'route="/predict"'),
        "has no label route",
    ),
    (
        "primary-pods",
        check_queries_select_canary_pods_only,
        lambda o: _set_query(o, "(-[0-9a-zA-Z]+)", "(-[0-9a-zA-Z]+)+"),
        "matches primary pod",
    ),
    (
        "no-namespace",
        check_queries_select_canary_pods_only,
        lambda o: _set_query(o, 'namespace="{{ namespace }}", ', ""),
        "not selected by namespace",
    ),
    (
        "pdb-canary-only",
        check_selectors_cover_the_primary,
        lambda o: _selector(o, "PodDisruptionBudget").update({"app.kubernetes.io/name": API}),
        "PodDisruptionBudget/housing-api selector",
    ),
    (
        "redis-admits-canary-only",
        check_selectors_cover_the_primary,
        lambda o: _redis_peer(o).update({"app.kubernetes.io/name": API}),
        "ingress peer selects the canary",
    ),
    (
        "job-from-name",
        check_selectors_cover_the_primary,
        lambda o: _monitor(o)["spec"].update(jobLabel="app.kubernetes.io/name"),
        "jobLabel",
    ),
    (
        "hand-written-service",
        check_flagger_owns_the_routing,
        lambda o: o.append({"kind": "Service", "metadata": {"name": API}}),
        "Flagger's to generate",
    ),
    (
        "s3-secret-to-api",
        check_s3_access,
        lambda o: _container(o, "api")["envFrom"].append({"secretRef": {"name": S3_SECRET}}),
        "not fetch-model alone",
    ),
    (
        "s3-secret-required",
        check_s3_access,
        lambda o: _container(o, "fetch-model")["envFrom"][1]["secretRef"].pop("optional"),
        "not optional",
    ),
    (
        "api-token",
        check_s3_access,
        lambda o: _named_obj(o, "ServiceAccount").pop("automountServiceAccountToken"),
        "mounts a Kubernetes API token",
    ),
    (
        "https-through-missing-sidecar",
        check_s3_access,
        lambda o: _annotations(o).update({"traffic.sidecar.istio.io/excludeOutboundPorts": "5000"}),
        "not running yet",
    ),
    (
        "s3-egress-to-cluster",
        check_s3_access,
        lambda o: _https_block(o)["except"].remove("10.0.0.0/8"),
        "reaches private addresses",
    ),
    (
        "no-stable-version",
        check_stable_version_reaches_the_canary,
        lambda o: _config(o).pop("STABLE_MODEL_VERSION"),
        "no STABLE_MODEL_VERSION",
    ),
]


def _named_obj(objs: list[Obj], kind: str, name: str = API) -> Obj:
    found = named(objs, kind, name)
    assert found is not None
    return found


def _container(objs: list[Obj], name: str) -> Obj:
    spec = _named_obj(objs, "Deployment")["spec"]["template"]["spec"]
    container: Obj = next(c for c in spec["initContainers"] + spec["containers"] if c["name"] == name)
    return container


def _annotations(objs: list[Obj]) -> dict[str, str]:
    annotations: dict[str, str] = _named_obj(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    return annotations


def _https_block(objs: list[Obj]) -> Obj:
    egress = _named_obj(objs, "NetworkPolicy")["spec"]["egress"]
    block: Obj = next(p["ipBlock"] for r in egress for p in r.get("to", []) if "ipBlock" in p)
    return block


def _selector(objs: list[Obj], kind: str) -> dict[str, str]:
    obj = named(objs, kind, API)
    assert obj is not None
    labels: dict[str, str] = obj["spec"]["selector"]["matchLabels"]
    return labels


def _redis_peer(objs: list[Obj]) -> dict[str, str]:
    policy = named(objs, "NetworkPolicy", "housing-api-redis")
    assert policy is not None
    labels: dict[str, str] = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    return labels


def _monitor(objs: list[Obj]) -> Obj:
    monitor = named(objs, "PodMonitor", API)
    assert monitor is not None
    return monitor


def _config(objs: list[Obj]) -> dict[str, str]:
    data: dict[str, str] = next(c for c in of_kind(objs, "ConfigMap") if "STABLE_MODEL_VERSION" in c.get("data", {}))[
        "data"
    ]
    return data


@pytest.mark.parametrize(("check", "mutate", "expected"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_each_check_reports_the_broken_invariant(
    prod: list[Obj], check: Check, mutate: Callable[[list[Obj]], None], expected: str
) -> None:
    problems = broken_by(prod, mutate, check)
    assert any(expected in p for p in problems), problems


def test_the_alert_check_notices_a_name_only_the_canary_has() -> None:
    text = ALERTS.read_text()
    for old in (
        'deployment=~"housing-api|housing-api-primary"',
        'destination_service_name=~"housing-api(-primary|-canary)?"',
    ):
        assert old in text
        broken = text.replace(old, old.split("=")[0] + '="housing-api"', 1)
        assert any("misses housing-api-" in p for p in alert_name_problems(broken)), old


def test_the_canary_pod_regex_is_flaggers() -> None:
    # The regex the MetricTemplates use, as Flagger's docs write it, with the target substituted.
    pattern = CANARY_POD.format(target=API)
    assert all(re.fullmatch(pattern, p) for p in CANARY_PODS)
    assert not any(re.fullmatch(pattern, p) for p in PRIMARY_PODS)
