"""Checks of Redis in the manifests: credentials, transport, the API's NetworkPolicy, high
availability, the exporter and the Sentinel ports."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from helpers.k8s.monitoring import _istio_merges_metrics, _merged_address
from helpers.k8s.objects import (
    API,
    ISTIO_MERGED_PORT,
    REDIS,
    REDIS_JOB,
    Obj,
    _config,
    _named,
    all_containers,
    api_deployment,
    config_value,
    container_port,
    flag_values,
    match_labels,
    namespace_of,
    of_kind,
    pod_labels,
    pod_spec,
    redis_bytes,
    redis_workload,
    ref,
    selects,
    workloads,
)
from helpers.k8s.workloads import _istio_injected

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
