"""What Flagger does with the prod overlay's Canary, for the tests (no Flagger runs offline).

- `generated(objs)`: the objects Flagger creates in the cluster from each rendered Canary (on Istio),
  so that the manifest checks hold for what the cluster will run, not only for what we apply: the
  primary Deployment and HPA, the apex, -primary and -canary Services, the VirtualService and one
  DestinationRule per backend, at rest (all traffic on the primary).
- `fleet(objs, name)`: the workload a name stands for once Flagger splits it in two.
- `metric_query(template, ...)`: a MetricTemplate's query as Flagger sends it to Prometheus.

From Flagger's documentation ("How it works", "Istio Canary Deployments", "Metrics Analysis") and
its Istio router. Simplification: Flagger points the primary at copies of the target's ConfigMaps
and Secrets (`<name>-primary`, same data); here it keeps the target's, which the checks read alike.
"""

from __future__ import annotations

import copy
import re
from typing import Any

Obj = dict[str, Any]

KIND = "Canary"
# The labels Flagger looks for in the target's selector, in its order (its -selector-labels
# default); the first one found is rewritten to <value>-primary on the primary.
SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")
# A canary pod's name: <target>-<replicaset hash>-<pod id>; the primary's has `-primary` first.
CANARY_POD = "{target}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
_VARIABLE = re.compile(r"\{\{\s*(namespace|target|interval|variables\.(\w+))\s*\}\}")


def canaries(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] == KIND]


def selector_label(target: Obj) -> str:
    """The label Flagger renames on the primary: the first of SELECTOR_LABELS in the selector."""
    selector = target["spec"]["selector"]["matchLabels"]
    return next(label for label in SELECTOR_LABELS if label in selector)


def fleet(objs: list[Obj], name: str) -> str:
    """The Canary's target name for its target, its primary and their Services; else `name`."""
    for canary in canaries(objs):
        target = canary["spec"]["targetRef"]["name"]
        if name in (target, f"{target}-primary", f"{target}-canary"):
            return str(target)
    return name


def metric_query(
    template: Obj, namespace: str, target: str, interval: str, variables: dict[str, str] | None = None
) -> str:
    """The query with Flagger's variables substituted; an unknown variable raises KeyError."""
    values = {"namespace": namespace, "target": target, "interval": interval}

    def substitute(match: re.Match[str]) -> str:
        return (variables or {})[match[2]] if match[2] else values[match[1]]

    return _VARIABLE.sub(substitute, template["spec"]["query"])


def generated(objs: list[Obj]) -> list[Obj]:
    """Everything Flagger creates for every Canary in `objs` whose target is rendered."""
    created = []
    for canary in canaries(objs):
        target = _find(objs, "Deployment", canary["spec"]["targetRef"]["name"], _namespace(canary))
        if target is not None:
            created += _generated_for(objs, canary, target)
    return created


def _generated_for(objs: list[Obj], canary: Obj, target: Obj) -> list[Obj]:
    name, label = target["metadata"]["name"], selector_label(target)
    primary = _primary_deployment(target, label)
    created = [primary]
    hpa_ref = canary["spec"].get("autoscalerRef")
    hpa = _find(objs, "HorizontalPodAutoscaler", hpa_ref["name"], _namespace(canary)) if hpa_ref else None
    if hpa is not None:
        created.append(_primary_hpa(hpa, primary))
    service = canary["spec"]["service"]
    for svc_name, pods in ((name, f"{name}-primary"), (f"{name}-primary", f"{name}-primary"), (f"{name}-canary", name)):
        created.append(_service(canary, target, svc_name, {label: pods}))
    created.append(_virtual_service(canary, target, service))
    created += [_destination_rule(canary, target, f"{name}-{role}", service) for role in ("primary", "canary")]
    return created


def _meta(name: str, source: Obj) -> Obj:
    """Flagger's objects carry the source's labels and are owned by the Canary."""
    return {"name": name, "namespace": _namespace(source), "labels": dict(source["metadata"].get("labels", {}))}


def _primary_deployment(target: Obj, label: str) -> Obj:
    primary = copy.deepcopy(target)
    name = f"{target['metadata']['name']}-primary"
    primary["metadata"] = _meta(name, target)
    primary["spec"]["selector"]["matchLabels"][label] = name
    primary["spec"]["template"]["metadata"]["labels"][label] = name
    for constraint in primary["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
        labels = constraint.get("labelSelector", {}).get("matchLabels", {})
        if labels.get(label) == target["metadata"]["name"]:
            labels[label] = name
    return primary


def _primary_hpa(hpa: Obj, primary: Obj) -> Obj:
    copied = copy.deepcopy(hpa)
    copied["metadata"] = _meta(f"{hpa['metadata']['name']}-primary", hpa)
    copied["spec"]["scaleTargetRef"]["name"] = primary["metadata"]["name"]
    return copied


def _service(canary: Obj, target: Obj, name: str, selector: dict[str, str]) -> Obj:
    spec = canary["spec"]["service"]
    port = {"name": spec.get("portName", "http"), "port": spec["port"], "protocol": "TCP"}
    port["targetPort"] = spec.get("targetPort", spec["port"])
    if "appProtocol" in spec:
        port["appProtocol"] = spec["appProtocol"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, target),
        "spec": {"type": "ClusterIP", "selector": selector, "ports": [port]},
    }


def _virtual_service(canary: Obj, target: Obj, service: Obj) -> Obj:
    name = target["metadata"]["name"]
    route: Obj = {
        "route": [
            {"destination": {"host": f"{name}-primary", "port": {"number": service["port"]}}, "weight": 100},
            {"destination": {"host": f"{name}-canary", "port": {"number": service["port"]}}, "weight": 0},
        ]
    }
    for field in ("match", "timeout", "retries"):
        if field in service:
            route[field] = copy.deepcopy(service[field])
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": _meta(name, canary),
        "spec": {"hosts": [*service.get("hosts", []), name], "gateways": list(service.get("gateways", [])),
                 "http": [route]},
    }  # fmt: skip


def _destination_rule(canary: Obj, target: Obj, host: str, service: Obj) -> Obj:
    spec: Obj = {"host": host}
    if "trafficPolicy" in service:
        spec["trafficPolicy"] = copy.deepcopy(service["trafficPolicy"])
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": _meta(host, canary),
        "spec": spec,
    }


def _namespace(obj: Obj) -> str | None:
    namespace: str | None = obj["metadata"].get("namespace")
    return namespace


def _find(objs: list[Obj], kind: str, name: str, namespace: str | None) -> Obj | None:
    return next(
        (o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name and _namespace(o) == namespace),
        None,
    )
