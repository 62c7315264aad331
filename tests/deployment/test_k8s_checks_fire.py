"""Each check of tests/helpers/k8s/ reports the breakage it exists to catch, on a broken copy of
a clean render."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
from helpers.k8s import PROD_CHECKS
from helpers.k8s.environments import check_dev, check_prod_model, check_prod_namespace
from helpers.k8s.istio import (
    check_connection_bounds,
    check_destination_rules,
    check_mesh_policy,
    check_outlier_detection,
    check_public_routes,
    check_retries,
    check_timeouts,
    check_virtual_services,
)
from helpers.k8s.monitoring import (
    check_gateway_monitor,
    check_grafana_dashboard,
    check_monitoring_selector,
    check_pod_monitors,
    check_prometheus_rule,
)
from helpers.k8s.mutations import broken_by
from helpers.k8s.objects import (
    API,
    DASHBOARD_LABEL,
    PRIMARY,
    REDIS,
    Check,
    Obj,
    _api,
    _api_container,
    _config,
    _named,
    of_kind,
    pod_spec,
    redis_workload,
)
from helpers.k8s.redis import (
    check_api_network_policy,
    check_no_secret_in_config_or_command,
    check_redis_auth,
    check_redis_exporter,
    check_redis_ha,
    check_redis_transport,
    check_sentinel_ports,
)
from helpers.k8s.schemas import check_schemas
from helpers.k8s.workloads import (
    check_api_cpu,
    check_api_pod,
    check_container_security,
    check_graceful_shutdown,
    check_hpa_targets,
    check_image_tags,
    check_labels,
    check_pdbs,
    check_probe_ports,
    check_prod_images,
    check_redis_is_a_cache,
    check_redis_url,
    check_service_selectors,
)

# --- each check fails when its invariant breaks ------------------------------------------------


def _redis(objs: list[Obj]) -> Obj:
    redis = redis_workload(objs)
    assert redis is not None
    return redis


def _redis_container(objs: list[Obj]) -> Obj:
    return pod_spec(_redis(objs))["containers"][0]


def _set_flag(objs: list[Obj], flag: str, value: str) -> None:
    args = _redis_container(objs)["args"]
    args[args.index(flag) + 1] = value


def _route(objs: list[Obj]) -> Obj:
    return _named(objs, "VirtualService")["spec"]["http"][0]


def _gateway_monitor(objs: list[Obj]) -> Obj:
    return _named(objs, "PodMonitor", "housing-api-gateway")


def _gateway_keeps(objs: list[Obj]) -> list[Obj]:
    relabelings: list[Obj] = _gateway_monitor(objs)["spec"]["podMetricsEndpoints"][0]["metricRelabelings"]
    return relabelings


def _route_for_the_gateway_only(objs: list[Obj]) -> None:
    for match in _route(objs)["match"]:
        match["gateways"] = ["housing-api"]


def _second_virtual_service(objs: list[Obj]) -> None:
    # A mesh-only copy without the policy: the route would no longer be written down once.
    extra = copy.deepcopy(_named(objs, "VirtualService"))
    extra["metadata"]["name"] = "housing-api-mesh"
    objs.append(extra)


def _outlier(objs: list[Obj]) -> Obj:
    outlier: Obj = _named(objs, "DestinationRule", PRIMARY)["spec"]["trafficPolicy"]["outlierDetection"]
    return outlier


def _rename_api_deployment(objs: list[Obj]) -> None:
    _api(objs)["metadata"]["name"] = "housing-api-v2"


def _hpa_cpu(objs: list[Obj]) -> Obj:
    metric: Obj = _named(objs, "HorizontalPodAutoscaler")["spec"]["metrics"][0]
    return metric


def _hpa_on_pod_cpu(objs: list[Obj]) -> None:
    metric = _hpa_cpu(objs)
    resource = metric.pop("containerResource")
    del resource["container"]
    metric.update(type="Resource", resource=resource)


def _pdb_min_available(objs: list[Obj]) -> None:
    spec = _named(objs, "PodDisruptionBudget")["spec"]
    del spec["maxUnavailable"]
    spec["minAvailable"] = 2


def _endpoint(objs: list[Obj]) -> Obj:
    endpoint: Obj = _named(objs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    return endpoint


def _api_annotations(objs: list[Obj]) -> dict[str, str]:
    annotations: dict[str, str] = _api(objs)["spec"]["template"]["metadata"]["annotations"]
    return annotations


def _first_alert(objs: list[Obj]) -> Obj:
    groups = _named(objs, "PrometheusRule")["spec"]["groups"]
    return next(r for g in groups for r in g["rules"] if "alert" in r)


def _redis_may_run_as_root(objs: list[Obj]) -> None:
    del pod_spec(_redis(objs))["securityContext"]["runAsNonRoot"]
    del _redis_container(objs)["securityContext"]["runAsNonRoot"]


def _fetch_model(objs: list[Obj]) -> Obj:
    return next(c for c in pod_spec(_api(objs))["initContainers"] if c["name"] == "fetch-model")


def _drop_api_sentinel_egress(objs: list[Obj]) -> None:
    for rule in _named(objs, "NetworkPolicy", API)["spec"]["egress"]:
        rule["ports"] = [p for p in rule.get("ports", []) if p["port"] != 26379]


MUTATIONS: list[tuple[str, Check, Callable[[list[Obj]], None], str]] = [
    ("redis-ha-one-pod", check_redis_ha, lambda o: _redis(o)["spec"].__setitem__("replicas", 1), "fewer than 3"),
    (
        "redis-ha-same-node",
        check_redis_ha,
        lambda o: pod_spec(_redis(o)).pop("affinity"),
        "no required anti-affinity",
    ),
    (
        "redis-ha-no-pdb",
        check_redis_ha,
        lambda o: o.remove(_named(o, "PodDisruptionBudget", REDIS)),
        "needs one PodDisruptionBudget",
    ),
    ("redis-ha-base-memory", check_redis_ha, lambda o: _set_flag(o, "--maxmemory", "192mb"), "below docs/capacity.md"),
    (
        "redis-ha-no-sentinel",
        check_redis_ha,
        lambda o: pod_spec(_redis(o))["containers"].pop(1),
        "runs no sentinel",
    ),
    ("sentinel-port-closed-at-api", check_sentinel_ports, _drop_api_sentinel_egress, "not 6379 and 26379"),
    (
        "redis-without-exporter",
        check_redis_exporter,
        lambda o: pod_spec(_redis(o))["containers"].pop(2),
        "runs no prometheus-redis-exporter",
    ),
    (
        "redis-exporter-wrong-job",
        check_redis_exporter,
        lambda o: _named(o, "PodMonitor", REDIS)["spec"]["podMetricsEndpoints"][0]["relabelings"].pop(),
        "the alerts select 'housing-api-redis'",
    ),
    (
        "redis-exporter-port-not-annotated",
        check_redis_exporter,
        lambda o: _redis(o)["spec"]["template"]["metadata"]["annotations"].__setitem__("prometheus.io/port", "6379"),
        "not the exporter's port",
    ),
    (
        "redis-exporter-scrape-blocked",
        check_redis_exporter,
        lambda o: _named(o, "NetworkPolicy", REDIS)["spec"]["ingress"].pop(),
        "do not admit Prometheus",
    ),
    (
        "sentinel-port-closed-at-redis",
        check_sentinel_ports,
        lambda o: _named(o, "NetworkPolicy", REDIS)["spec"]["ingress"].pop(1),
        "from the Redis pods, not redis and sentinel",
    ),
    (
        "model-alias-in-prod",
        check_prod_model,
        lambda o: _config(o).__setitem__("MODEL_URI", "models:/housing@champion"),
        "not a pinned registry version",
    ),
    (
        "model-store-not-shared",
        check_prod_model,
        lambda o: _fetch_model(o)["volumeMounts"][0].__setitem__("mountPath", "/var/models"),
        "do not share MODEL_STORE",
    ),
    (
        "mlflow-through-sidecar",
        check_prod_model,
        lambda o: _api(o)["spec"]["template"]["metadata"]["annotations"].__setitem__(
            "traffic.sidecar.istio.io/excludeOutboundPorts", "6379"
        ),
        "port 5000 is not excluded",
    ),
    (
        "mlflow-plain-http",
        check_prod_model,
        lambda o: _config(o).__setitem__("MLFLOW_TRACKING_URI", "http://mlflow.mlflow.svc.cluster.local:5000"),
        "MLFLOW_TRACKING_URI is not https",
    ),
    (
        "mlflow-tls-unchecked",
        check_prod_model,
        lambda o: _config(o).__setitem__("MLFLOW_TRACKING_INSECURE_TLS", "true"),
        "MLFLOW_TRACKING_INSECURE_TLS",
    ),
    (
        "mlflow-ca-not-mounted",
        check_prod_model,
        lambda o: _fetch_model(o)["volumeMounts"].pop(),
        "is on no mounted volume",
    ),
    (
        "redis-password-in-configmap",
        check_no_secret_in_config_or_command,
        lambda o: _config(o).__setitem__("REDIS_URL", "redis://:hunter2hunter2@housing-api-redis:6379/0"),
        "a URL with a password",
    ),
    (
        "redis-password-on-command-line",
        check_no_secret_in_config_or_command,
        lambda o: _redis_container(o)["args"].extend(["--requirepass", "hunter2hunter2"]),
        "a password on the command line",
    ),
    (
        "redis-password-as-env-value",
        check_no_secret_in_config_or_command,
        lambda o: _api_container(o)["env"].append({"name": "REDIS_PASSWORD", "value": "hunter2hunter2"}),
        "a plain value",
    ),
    (
        "redis-user-from-another-secret",
        check_redis_auth,
        lambda o: _api_container(o)["env"][0]["valueFrom"]["secretKeyRef"].__setitem__("name", "other"),
        "REDIS_USERNAME is not a secretKeyRef",
    ),
    (
        "redis-password-file-not-mounted",
        check_redis_auth,
        lambda o: _api_container(o)["env"][1].__setitem__("value", "/etc/redis-password"),
        "REDIS_PASSWORD_FILE",
    ),
    (
        "redis-without-acl",
        check_redis_auth,
        lambda o: _set_flag(o, "--aclfile", "/data/users.acl"),
        "--aclfile",
    ),
    (
        "api-netpol-selects-nothing",
        check_api_network_policy,
        lambda o: _named(o, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"].__setitem__(
            "app.kubernetes.io/component", "web"
        ),
        "expected one NetworkPolicy selecting the API pods",
    ),
    (
        "api-netpol-open-ingress",
        check_api_network_policy,
        lambda o: _named(o, "NetworkPolicy")["spec"]["ingress"].append({"ports": [{"port": 8000}]}),
        "ingress admits",
    ),
    (
        "api-netpol-open-egress",
        check_api_network_policy,
        lambda o: _named(o, "NetworkPolicy")["spec"]["egress"].append({"ports": [{"port": 443}]}),
        "without `to`",
    ),
    (
        "api-netpol-no-dns",
        check_api_network_policy,
        lambda o: _named(o, "NetworkPolicy")["spec"]["egress"].pop(1),
        "egress does not allow",
    ),
    (
        "redis-excluded-from-mesh",
        check_redis_transport,
        lambda o: _api_annotations(o).__setitem__("traffic.sidecar.istio.io/excludeOutboundPorts", "6379,5000"),
        "6379 is excluded",
    ),
    (
        "redis-without-sidecar",
        check_redis_transport,
        lambda o: _redis(o)["spec"]["template"]["metadata"]["labels"].__setitem__("sidecar.istio.io/inject", "false"),
        "no sidecar",
    ),
    (
        "redis-plaintext-allowed",
        check_redis_transport,
        lambda o: _named(o, "PeerAuthentication", REDIS)["spec"]["mtls"].__setitem__("mode", "PERMISSIVE"),
        "no STRICT PeerAuthentication",
    ),
    ("hpa-target-renamed", check_hpa_targets, _rename_api_deployment, "not rendered"),
    ("hpa-cpu-of-the-whole-pod", check_hpa_targets, _hpa_on_pod_cpu, "averages every container"),
    (
        "hpa-cpu-of-another-container",
        check_hpa_targets,
        lambda o: _hpa_cpu(o)["containerResource"].__setitem__("container", "istio-proxy"),
        "does not run",
    ),
    (
        "deployment-fights-hpa",
        check_hpa_targets,
        lambda o: _api(o)["spec"].__setitem__("replicas", 3),
        "spec.replicas",
    ),
    (
        "prod-hpa-single-replica",
        PROD_CHECKS[1],
        lambda o: _named(o, "HorizontalPodAutoscaler")["spec"].__setitem__("minReplicas", 1),
        "minReplicas=1",
    ),
    (
        "hpa-scale-down-unstabilised",
        check_hpa_targets,
        lambda o: _named(o, "HorizontalPodAutoscaler")["spec"]["behavior"]["scaleDown"].pop(
            "stabilizationWindowSeconds"
        ),
        "scale-down",
    ),
    (
        "readiness-probe-port",
        check_probe_ports,
        lambda o: _api_container(o)["readinessProbe"]["httpGet"].__setitem__("port", 8080),
        "readinessProbe port 8080",
    ),
    (
        "redis-liveness-port",
        check_probe_ports,
        lambda o: _redis_container(o)["livenessProbe"]["tcpSocket"].__setitem__("port", "tcp"),
        "livenessProbe port 'tcp'",
    ),
    (
        "scrape-port",
        check_probe_ports,
        lambda o: _api(o)["spec"]["template"]["metadata"]["annotations"].__setitem__("prometheus.io/port", "9090"),
        "prometheus.io/port",
    ),
    (
        "readiness-path",
        check_api_pod,
        lambda o: _api_container(o)["readinessProbe"]["httpGet"].__setitem__("path", "/livez"),
        "probe paths",
    ),
    ("tmp-not-writable", check_api_pod, lambda o: _api_container(o).pop("volumeMounts"), "/tmp"),
    (
        "service-selector",
        check_service_selectors,
        lambda o: _named(o, "Service")["spec"]["selector"].__setitem__("app.kubernetes.io/component", "web"),
        "expected the pods of the workload housing-api",
    ),
    (
        "redis-service-selects-api",
        check_service_selectors,
        lambda o: _named(o, "Service", REDIS)["spec"].__setitem__(
            "selector", dict(_named(o, "Service")["spec"]["selector"])
        ),
        "housing-api-redis",
    ),
    (
        "service-target-port",
        check_service_selectors,
        lambda o: _named(o, "Service")["spec"]["ports"][0].__setitem__("targetPort", "metrics"),
        "targets 'metrics'",
    ),
    (
        "image-latest",
        check_image_tags,
        lambda o: _api_container(o).__setitem__("image", "ghcr.io/example/housing-api:latest"),
        "mutable tag 'latest'",
    ),
    (
        "image-untagged",
        check_image_tags,
        lambda o: _api_container(o).__setitem__("image", "ghcr.io/example/housing-api"),
        "no tag",
    ),
    (
        "image-registry-port-untagged",
        check_image_tags,
        lambda o: _api_container(o).__setitem__("image", "registry.local:5000/housing-api"),
        "no tag",
    ),
    (
        "prod-image-dev-tag",
        check_prod_images,
        lambda o: _api_container(o).__setitem__("image", "ghcr.io/example/housing-api:dev"),
        "mutable tag 'dev'",
    ),
    (
        "prod-image-local",
        check_prod_images,
        lambda o: _api_container(o).__setitem__("image", "housing-api:0.1.0"),
        "registry",
    ),
    (
        "redis-url-port",
        check_redis_url,
        lambda o: _config(o).__setitem__("REDIS_URL", "redis://housing-api-redis:6380/0"),
        "port 6380",
    ),
    (
        "redis-url-host",
        check_redis_url,
        lambda o: _config(o).__setitem__("REDIS_URL", "redis://redis:6379/0"),
        "'redis'",
    ),
    (
        "redis-url-api-service",
        check_redis_url,
        lambda o: _config(o).__setitem__("REDIS_URL", "redis://housing-api:8000/0"),
        "selects no Redis pods",
    ),
    ("redis-url-missing", check_redis_url, lambda o: _config(o).pop("REDIS_URL"), "no REDIS_URL"),
    (
        "pdb-selector",
        check_pdbs,
        lambda o: _named(o, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].__setitem__(
            "app.kubernetes.io/component", "worker"
        ),
        "no PodDisruptionBudget covers",
    ),
    ("pdb-min-available", check_pdbs, _pdb_min_available, "minAvailable"),
    (
        "retry-5xx",
        check_retries,
        lambda o: _route(o)["retries"].__setitem__("retryOn", "5xx,connect-failure,refused-stream"),
        "retryOn",
    ),
    (
        "retry-429",
        check_retries,
        lambda o: _route(o)["retries"].__setitem__("retryOn", "connect-failure,retriable-4xx"),
        "retryOn",
    ),
    ("no-gateway-monitor", check_gateway_monitor, lambda o: o.remove(_gateway_monitor(o)), "expected one PodMonitor"),
    (
        "gateway-monitor-elsewhere",
        check_gateway_monitor,
        lambda o: _gateway_monitor(o)["spec"].pop("namespaceSelector"),
        "looks for the gateway in ['housing-api']",
    ),
    (
        "gateway-latency-dropped",
        check_gateway_monitor,
        lambda o: _gateway_keeps(o)[0].update(regex="istio_requests_total"),
        "drops istio_request_duration_milliseconds_bucket",
    ),
    (
        "gateway-keeps-another-service",
        check_gateway_monitor,
        lambda o: _gateway_keeps(o)[1].update(regex="other-api"),
        "drops destination_service_name=housing-api",
    ),
    (
        "rule-not-selected",
        check_monitoring_selector,
        lambda o: _named(o, "PrometheusRule")["metadata"]["labels"].pop("release"),
        "Prometheus ignores it",
    ),
    (
        "gateway-monitor-not-selected",
        check_monitoring_selector,
        lambda o: _gateway_monitor(o)["metadata"]["labels"].update(release="prometheus"),
        "has release='prometheus'",
    ),
    ("retries-default", check_retries, lambda o: _route(o).pop("retries"), "no retries block"),
    (
        "gateway-only",
        check_mesh_policy,
        lambda o: _named(o, "VirtualService")["spec"]["gateways"].remove("mesh"),
        "not bound to mesh",
    ),
    (
        "mesh-only",
        check_mesh_policy,
        lambda o: _named(o, "VirtualService")["spec"].update(gateways=["mesh"]),
        "no ingress gateway",
    ),
    (
        "public-host-only",
        check_mesh_policy,
        lambda o: _named(o, "VirtualService")["spec"]["hosts"].__delitem__(slice(1, None)),
        "lack the cluster host",
    ),
    ("policy-for-one-gateway", check_mesh_policy, _route_for_the_gateway_only, "applies only to gateways"),
    ("second-virtualservice", check_mesh_policy, _second_virtual_service, "expected one VirtualService"),
    ("no-timeout", check_retries, lambda o: _route(o).pop("timeout"), "no request timeout"),
    (
        "per-try-timeout-preempts-timeout",  # the pair before issue 14: 10 s that never applied
        check_timeouts,
        lambda o: (_route(o).__setitem__("timeout", "10s"), _route(o)["retries"].__setitem__("perTryTimeout", "5s")),
        "never applies",
    ),
    (
        "gateway-cuts-the-service-deadline",
        check_timeouts,
        lambda o: (_route(o).__setitem__("timeout", "3s"), _route(o)["retries"].__setitem__("perTryTimeout", "3s")),
        "REQUEST_TIMEOUT_S",
    ),
    (
        "outlier-gateway-errors",
        check_outlier_detection,
        lambda o: _outlier(o).__setitem__("consecutiveGatewayErrors", 5),
        "consecutiveGatewayErrors=5",
    ),
    (
        "outlier-5xx-left-to-the-default",
        check_outlier_detection,
        lambda o: _outlier(o).pop("consecutive5xxErrors"),
        "consecutive5xxErrors=unset (5)",
    ),
    (
        "outlier-local-origin-unsplit",
        check_outlier_detection,
        lambda o: _outlier(o).pop("splitExternalLocalOriginErrors"),
        "splitExternalLocalOriginErrors",
    ),
    (
        "vs-port",
        check_virtual_services,
        lambda o: _route(o)["route"][0]["destination"]["port"].__setitem__("number", 80),
        "port 80",
    ),
    (
        "vs-host",
        check_virtual_services,
        lambda o: _route(o)["route"][0]["destination"].__setitem__("host", "housing-api.default.svc.cluster.local"),
        "not a rendered Service",
    ),
    (
        "vs-gateway",
        check_virtual_services,
        lambda o: _named(o, "VirtualService")["spec"].__setitem__("gateways", ["public"]),
        "gateway 'public'",
    ),
    (
        "route-catch-all",
        check_public_routes,
        lambda o: _route(o)["match"].append({"uri": {"prefix": "/"}}),
        "/metrics",
    ),
    (
        "route-missing-predict",
        check_public_routes,
        lambda o: _route(o)["match"].pop(0),
        "no route serves /predict",
    ),
    (
        "dr-no-outlier-detection",
        check_destination_rules,
        lambda o: _named(o, "DestinationRule", PRIMARY)["spec"]["trafficPolicy"].pop("outlierDetection"),
        "outlierDetection",
    ),
    (
        "dr-no-pool",
        check_destination_rules,
        lambda o: _named(o, "DestinationRule", PRIMARY)["spec"]["trafficPolicy"].pop("connectionPool"),
        "connectionPool",
    ),
    (
        "init-container-root",
        check_container_security,
        lambda o: pod_spec(_api(o))["initContainers"][0]["securityContext"].__setitem__("runAsUser", 0),
        "initContainer fetch-model: runAsUser is 0",  # prod's first (wait-for-redis is dev and base only)
    ),
    (
        "init-container-escalation",
        check_container_security,
        lambda o: pod_spec(_api(o))["initContainers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
        "allowPrivilegeEscalation",
    ),
    (
        "api-cpu-limit-one-core",  # the limit before issue 14
        check_api_cpu,
        lambda o: _api_container(o)["resources"]["limits"].__setitem__("cpu", "1"),
        "below 2 cores",
    ),
    (
        "api-cpu-limit-millicores",
        check_api_cpu,
        lambda o: _api_container(o)["resources"]["limits"].__setitem__("cpu", "1500m"),
        "below 2 cores",
    ),
    (
        "redis-no-limits",
        check_container_security,
        lambda o: _redis_container(o)["resources"].pop("limits"),
        "no limits",
    ),
    (
        "api-writable-root",
        check_container_security,
        lambda o: _api_container(o)["securityContext"].__setitem__("readOnlyRootFilesystem", False),
        "readOnlyRootFilesystem",
    ),
    (
        "redis-may-run-as-root",
        check_container_security,
        _redis_may_run_as_root,
        "container redis: runAsNonRoot",
    ),
    (
        "grace-too-short",
        check_graceful_shutdown,
        lambda o: pod_spec(_api(o)).__setitem__("terminationGracePeriodSeconds", 25),
        "terminationGracePeriodSeconds=25",
    ),
    (
        "shutdown-deadline-past-the-grace-period",
        check_graceful_shutdown,
        lambda o: _config(o).__setitem__("SHUTDOWN_TIMEOUT_S", "60"),
        "SHUTDOWN_TIMEOUT_S 60 s",
    ),
    (
        "sidecar-drains-5s",
        check_graceful_shutdown,
        lambda o: _api(o)["spec"]["template"]["metadata"]["annotations"].pop("proxy.istio.io/config"),
        "Istio sidecar drains for 5 s",
    ),
    (
        "no-prestop",
        check_graceful_shutdown,
        lambda o: _api_container(o).pop("lifecycle"),
        "preStop",
    ),
    (
        "redis-noeviction",
        check_redis_is_a_cache,
        lambda o: _set_flag(o, "--maxmemory-policy", "noeviction"),
        "--maxmemory-policy",
    ),
    (
        "redis-persists",
        check_redis_is_a_cache,
        lambda o: _set_flag(o, "--appendonly", "yes"),
        "--appendonly",
    ),
    (
        "redis-maxmemory-over-limit",
        check_redis_is_a_cache,
        lambda o: _set_flag(o, "--maxmemory", "3gb"),
        "headroom",
    ),
    (
        "label-missing",
        check_labels,
        lambda o: _named(o, "Service")["metadata"]["labels"].pop("app.kubernetes.io/version"),
        "Service/housing-api lacks labels ['app.kubernetes.io/version']",
    ),
    (
        "selector-uses-version",
        check_labels,
        lambda o: _api(o)["spec"]["selector"]["matchLabels"].__setitem__("app.kubernetes.io/version", "0.1.0"),
        "immutable",
    ),
    (
        "namespace-not-injected",
        check_prod_namespace,
        lambda o: of_kind(o, "Namespace")[0]["metadata"]["labels"].pop("istio-injection"),
        "istio-injection",
    ),
    (
        "object-outside-namespace",
        check_prod_namespace,
        lambda o: _named(o, "Service")["metadata"].__setitem__("namespace", "default"),
        "Service/housing-api is in namespace 'default'",
    ),
    (
        "dashboard-unlabelled",
        check_grafana_dashboard,
        lambda o: _named(o, "ConfigMap", "housing-api-grafana-dashboard")["metadata"]["labels"].pop(DASHBOARD_LABEL),
        "expected one ConfigMap labelled grafana_dashboard=1",
    ),
    (
        "dashboard-stale",
        check_grafana_dashboard,
        lambda o: _named(o, "ConfigMap", "housing-api-grafana-dashboard")["data"].__setitem__("housing-api.json", "{}"),
        "does not hold grafana/dashboards/housing-api.json",
    ),
    (
        "podmonitor-selector",
        check_pod_monitors,
        lambda o: _named(o, "PodMonitor")["spec"]["selector"]["matchLabels"].__setitem__(
            "app.kubernetes.io/component", "cache"
        ),
        "expected Deployment/housing-api",
    ),
    (
        "podmonitor-selects-redis-too",
        check_pod_monitors,
        lambda o: _named(o, "PodMonitor")["spec"]["selector"].__setitem__(
            "matchLabels", {"app.kubernetes.io/instance": "housing-api"}
        ),
        "StatefulSet/housing-api-redis",
    ),
    (
        "podmonitor-other-namespace",
        check_pod_monitors,
        lambda o: _named(o, "PodMonitor")["metadata"].__setitem__("namespace", "monitoring"),
        "matches []",
    ),
    (
        "podmonitor-job",
        check_pod_monitors,
        lambda o: _named(o, "PodMonitor")["spec"].__setitem__("jobLabel", "app.kubernetes.io/component"),
        "gives job 'api'",
    ),
    (
        "podmonitor-undeclared-port",
        check_pod_monitors,
        lambda o: _endpoint(o).__setitem__("port", "metrics"),
        "port 'metrics', which no container",
    ),
    (
        "podmonitor-plain-app-port-under-mtls",
        check_pod_monitors,
        lambda o: _endpoint(o).update(port="http", path="/metrics", relabelings=[]),
        "STRICT mTLS",
    ),
    (
        "podmonitor-envoy-stats-only",
        check_pod_monitors,
        lambda o: _endpoint(o)["relabelings"][0].__setitem__("replacement", "$1:15090"),
        "Envoy's stats only",
    ),
    (
        "podmonitor-merge-off",
        check_pod_monitors,
        lambda o: _api_annotations(o).__setitem__("prometheus.istio.io/merge-metrics", "false"),
        "merging off",
    ),
    (
        "podmonitor-no-sidecar",
        check_pod_monitors,
        lambda o: _api(o)["spec"]["template"]["metadata"]["labels"].__setitem__("sidecar.istio.io/inject", "false"),
        "no Istio sidecar",
    ),
    (
        "podmonitor-app-port-unknown-to-istio",
        check_pod_monitors,
        lambda o: _api_annotations(o).__setitem__("prometheus.io/port", "9100"),
        "prometheus.io/port",
    ),
    (
        "prometheusrule-stale",
        check_prometheus_rule,
        lambda o: _first_alert(o).__setitem__("for", "1h"),
        "differs from prometheus/alerts.yaml",
    ),
    (
        "prometheusrule-missing",
        check_prometheus_rule,
        lambda o: o.remove(_named(o, "PrometheusRule")),
        "expected one PrometheusRule",
    ),
    (
        "schema-podmonitor-typo",
        check_schemas,
        lambda o: _endpoint(o).__setitem__("relabelling", []),
        "relabelling",
    ),
    (
        "schema-rule-without-expr",
        check_schemas,
        lambda o: _first_alert(o).pop("expr"),
        "expr",
    ),
    (
        "schema-bad-type",
        check_schemas,
        lambda o: _api_container(o)["ports"][0].__setitem__("containerPort", "eight-thousand"),
        "containerPort",
    ),
    (
        "schema-unknown-field",
        check_schemas,
        lambda o: _api_container(o).__setitem__("readinessprobe", {}),
        "readinessprobe",
    ),
    (
        "schema-istio-typo",
        check_schemas,
        lambda o: _route(o)["retries"].__setitem__("retry_on", "5xx"),
        "retry_on",
    ),
    (
        "schema-istio-bad-duration",
        check_schemas,
        lambda o: _route(o).__setitem__("timeout", "10 seconds"),
        "timeout",
    ),
    (
        "app-closes-idle-connections-before-envoy",
        check_connection_bounds,
        lambda o: _config(o).__setitem__("KEEPALIVE_TIMEOUT_S", "60"),
        "KEEPALIVE_TIMEOUT_S 60 s is not above",
    ),
    (
        "destination-rule-idle-timeout-left-at-istios-hour",
        check_connection_bounds,
        lambda o: _named(o, "DestinationRule", PRIMARY)["spec"]["trafficPolicy"]["connectionPool"]["http"].pop(
            "idleTimeout"
        ),
        "idleTimeout 3600 s",
    ),
    (
        "head-limit-below-envoys",
        check_connection_bounds,
        lambda o: _config(o).__setitem__("MAX_HEADER_BYTES", "8192"),
        "MAX_HEADER_BYTES is below Envoy's",
    ),
]


def test_every_mutation_starts_from_a_clean_render(prod: list[Obj]) -> None:
    for check in {id(m[1]): m[1] for m in MUTATIONS}.values():
        assert check(prod) == [], check.__name__


@pytest.mark.parametrize(("check", "mutate", "expected"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_check_reports_the_broken_invariant(
    prod: list[Obj], check: Check, mutate: Callable[[list[Obj]], None], expected: str
) -> None:
    problems = broken_by(prod, mutate, check)
    assert any(expected in p for p in problems), problems


def test_dev_check_reports_an_hpa_and_istio(dev: list[Obj], prod: list[Obj]) -> None:
    extra = [_named(prod, "VirtualService"), _named(prod, "HorizontalPodAutoscaler"), _named(prod, "PodMonitor")]
    broken = copy.deepcopy([*dev, *extra])
    problems = check_dev(broken)
    assert any("no HPA" in p for p in problems), problems
    assert any("Istio object VirtualService" in p for p in problems), problems
    assert any("Prometheus Operator object PodMonitor" in p for p in problems), problems
