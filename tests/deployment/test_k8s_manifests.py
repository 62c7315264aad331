"""The real renders of base, dev and prod keep every invariant of tests/helpers/k8s/, and the
Makefile renders each overlay."""

from __future__ import annotations

import copy
import re

import pytest
from conftest import RENDERS
from helpers.k8s import COMMON_CHECKS, PROD_CHECKS
from helpers.k8s.environments import check_dev
from helpers.k8s.objects import KUBERNETES_VERSION, ROOT, Check, Obj, of_kind
from helpers.k8s.redis import check_dev_redis_secret
from helpers.k8s.workloads import check_hpa_targets

# --- the real renders --------------------------------------------------------------------------


def test_kubernetes_validate_bundles_the_pinned_version() -> None:
    from kubernetes_validate.utils import all_versions

    assert any(v.startswith(f"{KUBERNETES_VERSION}.") for v in all_versions()), all_versions()


@pytest.mark.parametrize("name", RENDERS)
@pytest.mark.parametrize("check", COMMON_CHECKS, ids=lambda c: c.__name__)
def test_every_render_keeps_the_common_invariants(rendered: dict[str, list[Obj]], name: str, check: Check) -> None:
    assert check(rendered[name]) == []


@pytest.mark.parametrize(
    "check",
    PROD_CHECKS,
    ids=[
        "prod_images",
        "hpa_targets",
        "virtual_services",
        "mesh_policy",
        "retries",
        "timeouts",
        "outlier_detection",
        "public_routes",
        "destination_rules",
        "prod_namespace",
        "grafana_dashboard",
        "pod_monitors",
        "gateway_monitor",
        "monitoring_selector",
        "prometheus_rule",
        "prod_model",
        "connection_bounds",
        "redis_transport",
        "redis_ha",
        "sentinel_ports",
        "redis_exporter",
    ],
)
def test_prod_keeps_the_ingress_and_release_invariants(prod: list[Obj], check: Check) -> None:
    assert check(prod) == []


def test_base_hpa_targets_the_api_deployment(rendered: dict[str, list[Obj]]) -> None:
    assert check_hpa_targets(rendered["base"]) == []


def test_dev_is_a_single_local_replica_without_istio(dev: list[Obj]) -> None:
    assert check_dev(dev) == []


def test_dev_brings_a_placeholder_redis_secret_and_prod_none(dev: list[Obj], prod: list[Obj]) -> None:
    assert check_dev_redis_secret(dev) == []
    assert not of_kind(prod, "Secret")  # a real password is never in git


def test_the_dev_secret_check_notices_an_acl_that_disagrees(dev: list[Obj]) -> None:
    import base64

    broken = copy.deepcopy(dev)
    secret = of_kind(broken, "Secret")[0]
    secret["data"]["password"] = base64.b64encode(b"another-password").decode()
    assert check_dev_redis_secret(broken) == ["users.acl does not give the Secret's user the Secret's password"]


def test_every_render_has_the_expected_objects(rendered: dict[str, list[Obj]]) -> None:
    core = {"ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "NetworkPolicy"}
    kinds = {name: {o["kind"] for o in objs} for name, objs in rendered.items()}
    assert core | {"HorizontalPodAutoscaler"} <= kinds["base"]
    assert core | {"Namespace"} <= kinds["overlays/dev"]
    assert (
        core | {"Namespace", "HorizontalPodAutoscaler", "Gateway", "VirtualService", "DestinationRule"}
        <= kinds["overlays/prod"]
    )
    # The operator's kinds come from the component, which only prod includes.
    assert {"PodMonitor", "PrometheusRule"} <= kinds["overlays/prod"]
    assert not {"PodMonitor", "PrometheusRule"} & (kinds["base"] | kinds["overlays/dev"])


# --- the Makefile target that renders them ------------------------------------------------------


def test_makefile_renders_each_overlay() -> None:
    makefile = (ROOT / "Makefile").read_text()
    phony = " ".join(line for line in makefile.splitlines() if line.startswith(".PHONY"))
    assert "k8s-render" in phony.split()
    assert re.search(r"^k8s-render:", makefile, re.MULTILINE)
    assert "kustomize" in makefile
