"""Checks of the workloads and what serves them: selectors, probes, the API pod, security, CPU,
images, HPAs, PDBs, the Redis URL, graceful shutdown and labels."""

from __future__ import annotations

from urllib.parse import urlsplit

import yaml

from helpers.k8s.objects import (
    API,
    APP_BUSY_THREADS,
    APP_UID,
    LATEST,
    MUTABLE_TAGS,
    NAMESPACE_LABELS,
    NON_SELECTOR_LABELS,
    REDIS,
    REQUIRED_LABELS,
    SHUTDOWN_MARGIN_S,
    Obj,
    all_containers,
    api_deployment,
    config_value,
    container_port,
    duration_seconds,
    find,
    flag_values,
    match_labels,
    namespace_of,
    of_kind,
    pod_labels,
    pod_spec,
    quantity_bytes,
    redis_bytes,
    redis_workload,
    ref,
    resolve_service,
    selects,
    workloads,
)
from housing_api.config import Settings
from housing_api_testing.flagger import fleet

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
