"""The manifests match the built image: what `podman inspect` says of the image tests/image/test_image.py
builds (conftest's built_image), not the Dockerfile's text; skipped with the reason where podman cannot run."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import RENDERS
from helpers.k8s.objects import API, ROOT, Obj, _api, _api_container, _config, api_deployment, container_port, pod_spec

# --- the manifests match the built image (issue 16) ---------------------------------------------
# Read from `podman inspect` of the image tests/image/test_image.py builds (conftest's built_image), not
# from the Dockerfile's text; skipped with the reason where podman cannot run.


def _inspect(image: str, env: dict[str, str]) -> Obj:
    out = subprocess.run(["podman", "image", "inspect", image], env=env, capture_output=True, text=True, check=True)
    inspected: Obj = json.loads(out.stdout)[0]
    return inspected


def check_matches_image(objs: list[Obj], inspected: Obj) -> list[str]:
    """The API container's image name, user, port, probes and read-only root agree with the image."""
    deployment = api_deployment(objs)
    if deployment is None:
        return [f"no Deployment/{API}"]
    problems = []
    api = pod_spec(deployment)["containers"][0]
    built_names = {tag.rsplit(":", 1)[0].rsplit("/", 1)[-1] for tag in inspected.get("RepoTags") or []}
    if api["image"].split("@")[0].rsplit(":", 1)[0].rsplit("/", 1)[-1] not in built_names:
        problems.append(f"container image {api['image']!r} is not the built image {sorted(built_names)}")
    config = inspected["Config"]
    context = {**pod_spec(deployment).get("securityContext", {}), **api.get("securityContext", {})}
    user = f"{context.get('runAsUser')}:{context.get('runAsGroup')}"
    if config.get("User") not in (user, str(context.get("runAsUser"))):
        problems.append(f"runAsUser:runAsGroup {user} but the image runs as {config.get('User')!r}")
    exposed = {int(p.split("/")[0]) for p in config.get("ExposedPorts") or {}}
    declared = {p["containerPort"] for p in api.get("ports", [])}
    if exposed != declared:
        problems.append(f"containerPort {sorted(declared)} but the image exposes {sorted(exposed)}")
    cmd = config.get("Cmd") or []
    if "--port" in cmd and int(cmd[cmd.index("--port") + 1]) not in declared:
        problems.append(f"the image serves on {cmd[cmd.index('--port') + 1]}, not a containerPort")
    healthcheck = " ".join((inspected.get("Healthcheck") or {}).get("Test") or [])
    for probe in ("startupProbe", "livenessProbe"):
        path = api.get(probe, {}).get("httpGet", {}).get("path")
        if not path or path not in healthcheck:
            problems.append(f"{probe} path {path!r} is not what the image's HEALTHCHECK calls")
    if api.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true, but the image runs with a read-only root")
    return problems


@pytest.fixture(scope="module")
def inspected(built_image: tuple[str, dict[str, str]]) -> Obj:
    return _inspect(*built_image)


@pytest.mark.integration
@pytest.mark.parametrize("name", RENDERS)
def test_manifests_match_the_built_image(rendered: dict[str, list[Obj]], inspected: Obj, name: str) -> None:
    assert check_matches_image(rendered[name], inspected) == []


IMAGE_MUTATIONS: list[tuple[str, Callable[[list[Obj]], None]]] = [
    ("other-image", lambda objs: _api_container(objs).update(image="ghcr.io/example/other-api:0.1.0")),
    ("other-user", lambda objs: _api_container(objs)["securityContext"].update(runAsUser=10002)),
    ("other-port", lambda objs: _api_container(objs)["ports"][0].update(containerPort=8080)),
    ("liveness-path", lambda objs: _api_container(objs)["livenessProbe"]["httpGet"].update(path="/healthz")),
    ("writable-root", lambda objs: _api_container(objs)["securityContext"].update(readOnlyRootFilesystem=False)),
]


@pytest.mark.integration
@pytest.mark.parametrize("mutate", [m[1] for m in IMAGE_MUTATIONS], ids=[m[0] for m in IMAGE_MUTATIONS])
def test_image_check_reports_a_manifest_that_drifted_from_the_image(
    rendered: dict[str, list[Obj]], inspected: Obj, mutate: Callable[[list[Obj]], None]
) -> None:
    objs = copy.deepcopy(rendered["overlays/prod"])
    mutate(objs)
    assert check_matches_image(objs, inspected) != []


@pytest.mark.integration
def prefetched_store(tmp_path: Path, model_uri: str) -> Path:
    """What `housing-api fetch-model` leaves in MODEL_STORE for model_uri, with the committed model."""
    from housing_api.registry import CURRENT, PROVENANCE, parse_ref

    ref = parse_ref(model_uri)
    folder = tmp_path / "models" / ref.name / str(ref.version)
    folder.mkdir(parents=True)
    for name in ("model.joblib", "model.json", "model.forest.npz"):
        shutil.copy(ROOT / "model" / name, folder / name)
    recorded = json.loads((folder / "model.json").read_text())["version"]  # what the registry would record
    (folder / PROVENANCE).write_text(json.dumps({"name": ref.name, "version": ref.version, "model_version": recorded}))
    (tmp_path / "models" / CURRENT).write_text(json.dumps({"uri": model_uri, "name": ref.name, "version": ref.version}))
    return tmp_path / "models"


def test_the_image_answers_every_probe_run_as_the_manifests_run_it(
    rendered: dict[str, list[Obj]], built_image: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """The prod pod's settings, applied to the built image: its user, read-only root, emptyDir mounts,
    dropped capabilities and ConfigMap (without Redis: the cache is optional); each probe answers 200."""
    from housing_api_testing.harness import Container, wait_until

    objs = rendered["overlays/prod"]
    deployment = _api(objs)
    api, spec = _api_container(objs), pod_spec(deployment)
    context = {**spec.get("securityContext", {}), **api.get("securityContext", {})}
    args = ["--user", f"{context['runAsUser']}:{context['runAsGroup']}", "--cap-drop", "ALL"]
    if context.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    config = _config(objs)
    # MODEL_STORE is the emptyDir the fetch-model init container fills from the registry: here, a
    # folder laid out as it leaves it (test_registry.py runs the real fetch against a real MLflow).
    store = prefetched_store(tmp_path, config["MODEL_URI"])
    args += [a for m in api.get("volumeMounts", []) if m["name"] in empty_dirs
             for a in (("-v", f"{store}:{m['mountPath']}:ro") if m["mountPath"] == config["MODEL_STORE"]
                       else ("--tmpfs", m["mountPath"]))]  # fmt: skip
    where = ("REDIS_URL", "REDIS_MODE", "REDIS_SENTINEL_MASTER")  # where Redis is: nowhere, here
    args += [a for k, v in config.items() if k not in where for a in ("-e", f"{k}={v}")]
    port = container_port(deployment, "http")
    assert port is not None
    container = Container(built_image[0], built_image[1], *args, port=port["containerPort"]).start()
    try:
        assert wait_until(lambda: container.ready() or not container.running(), 60, interval_s=0.1), container.logs()
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = api[probe]["httpGet"]
            assert container_port(deployment, get["port"]) == port
            assert httpx.get(container.url + get["path"], timeout=api[probe]["timeoutSeconds"]).status_code == 200
        # The runtime image has no MLflow client: it served the folder the init container left.
        assert httpx.get(container.url + "/model", timeout=5).json()["registry"]["uri"] == config["MODEL_URI"]
    finally:
        container.remove()
