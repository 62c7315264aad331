"""Checks of what an overlay adds: prod's namespace and pinned model (fetched over checked TLS), dev's
local setup."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from helpers.k8s.objects import API, Obj, api_deployment, config_value, namespace_of, of_kind, pod_spec, ref
from helpers.k8s.workloads import _istio_injected


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
