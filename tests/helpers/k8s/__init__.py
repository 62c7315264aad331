"""The Kubernetes manifests as data, and the checks they must pass (tests/deployment/test_k8s_*.py).

`kubectl kustomize` renders base, dev and prod once per test module (the `rendered`, `prod` and `dev`
fixtures, registered by tests/conftest.py). Every core object is validated against the Kubernetes
OpenAPI schemas bundled with kubernetes-validate (strict: unknown fields fail); Istio objects get
structural JSON schemas of the fields we use.

Each `check_*` function takes rendered objects and returns a list of problems (empty = fine), so the
same function runs on the real render (test_k8s_manifests.py) and on deliberately broken copies
(test_k8s_checks_fire.py: every check reports the breakage it exists to catch, `mutations.broken_by`).

One module per kind of check: `objects` (names, and helpers over rendered objects), `schemas`,
`workloads` (pods, Services, HPAs, PDBs, labels, shutdown), `istio` (routes, retries, timeouts,
connection bounds), `monitoring` (PodMonitors, the dashboard, the PrometheusRule), `redis`
(credentials, transport, NetworkPolicy, HA), `environments` (what dev and prod add), `mutations`.
Here: which checks run on every render and which on prod's.
"""

from __future__ import annotations

from helpers.k8s.environments import check_prod_model, check_prod_namespace
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
from helpers.k8s.objects import Check
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
