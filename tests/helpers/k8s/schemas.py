"""Schema validation: core objects against the bundled Kubernetes OpenAPI schemas, Istio, Flagger and
Prometheus-operator objects against structural schemas of the fields we use."""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from helpers.k8s.objects import KUBERNETES_VERSION, Obj, ref

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
