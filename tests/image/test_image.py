"""The image, built and run for real: the container contract the Kubernetes manifests rely on.

`built_image` (conftest) builds the image from this checkout with podman on the local Debian base
(scripts/image-build.sh, cached layers after the first run) and skips with one line where podman
cannot run. Each test starts real containers of it: no Dockerfile text is read here.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import MODEL_PATH, ROOT, RedisServer

from housing_api import FEATURES
from housing_api.model import load_model, manifest_digest
from housing_api.schemas import SAMPLE_BATCH
from housing_api_testing.harness import Container, wait_until

pytestmark = pytest.mark.integration

APP_UID = 10001
READY_TARGET_S = 2.0  # the target; reported, not asserted (a shared machine is no stopwatch)
# 90 MB until the OpenTelemetry SDK (issue 24: traces), which measured 94.0 MB with it (SDK, semantic
# conventions, protobuf and opentelemetry-proto: 6 MB with their bytecode).
VENV_LIMIT_BYTES = 96_000_000
# What the manifests give the container (.k8s/base/api-deployment.yaml): a read-only root and one
# emptyDir at /tmp. podman's --read-only would add tmpfs on /tmp, /var/tmp and /run by itself.
LIKE_THE_MANIFESTS = ("--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:size=64m", "--cap-drop", "ALL")


@pytest.fixture(scope="module")
def image(built_image: tuple[str, dict[str, str]]) -> str:
    return built_image[0]


@pytest.fixture(scope="module")
def podman_env(built_image: tuple[str, dict[str, str]]) -> dict[str, str]:
    return built_image[1]


def start(image: str, env: dict[str, str], *args: str, timeout_s: float = 60) -> tuple[Container, float]:
    """A container started like the manifests start it, ready; and the seconds from `podman run` to /readyz."""
    container = Container(image, env, *LIKE_THE_MANIFESTS, *args)
    started = time.monotonic()
    container.start()
    if not wait_until(lambda: not container.running() or container.ready(), timeout_s, interval_s=0.05):
        logs = container.logs()
        container.remove()
        raise AssertionError(f"container not ready within {timeout_s} s:\n{logs}")
    if not container.running():
        logs = container.logs()
        container.remove()
        raise AssertionError(f"container exited:\n{logs}")
    return container, time.monotonic() - started


@pytest.fixture(scope="module")
def served(image: str, podman_env: dict[str, str]) -> Iterator[tuple[Container, float]]:
    """One container shared by the read-only checks."""
    container, ready_s = start(image, podman_env)
    yield container, ready_s
    container.remove()


def test_readyz_answers_soon_after_start(served: tuple[Container, float]) -> None:
    container, ready_s = served
    body = httpx.get(container.url + "/readyz").json()
    assert body["status"] == "ready" and body["model_version"] == load_model(MODEL_PATH).version
    print(f"/readyz 200 after {ready_s:.2f} s (target {READY_TARGET_S} s)")
    if ready_s > READY_TARGET_S:
        warnings.warn(f"/readyz took {ready_s:.2f} s (target {READY_TARGET_S} s) on a busy machine", stacklevel=1)


def test_sample_batch_predictions_equal_the_local_ones_exactly(served: tuple[Container, float]) -> None:
    container, _ = served
    response = httpx.post(container.url + "/predict", json=SAMPLE_BATCH)
    assert response.status_code == 200
    X = np.array([[float(row[f]) for f in FEATURES] for row in SAMPLE_BATCH])
    local = load_model(MODEL_PATH)
    assert response.json()["prediction"] == local.predict(X).tolist()
    assert response.json()["prediction"] == local.estimator.predict(X).tolist()  # scikit-learn's own numbers


def test_runs_as_uid_10001_and_not_root(served: tuple[Container, float]) -> None:
    container, _ = served
    status = container.exec("cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    gids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Gid:"))
    assert uids == [str(APP_UID)] * 4 and gids == [str(APP_UID)] * 4


@pytest.mark.parametrize("path", ["/", "/app", "/app/model", "/app/.venv", "/var/tmp", "/run", "/home", "/etc"])
def test_root_filesystem_is_read_only(served: tuple[Container, float], path: str) -> None:
    container, _ = served
    result = container.exec("sh", "-c", f"echo x > {path.rstrip('/')}/probe-write")
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr or "Permission denied" in result.stderr


def test_tmp_is_writable_because_the_manifests_mount_it(served: tuple[Container, float], image: str) -> None:
    container, _ = served
    assert container.exec("sh", "-c", "echo x > /tmp/probe-write && cat /tmp/probe-write").stdout == "x\n"
    mounts = container.podman("inspect", "--format", "{{json .HostConfig.Tmpfs}}", container.id).stdout
    assert set(json.loads(mounts)) == {"/tmp"}  # the only writable place: what the manifests mount there
    # Without that mount, /tmp is part of the read-only root like everything else.
    bare = container.podman("run", "--rm", "--read-only", "--read-only-tmpfs=false", "--no-healthcheck",
                            "--network", "none", image, "sh", "-c", "echo x > /tmp/probe-write")  # fmt: skip
    assert bare.returncode != 0 and "Read-only file system" in bare.stderr


def test_healthcheck_passes(served: tuple[Container, float]) -> None:
    container, _ = served
    config = json.loads(container.podman("inspect", "--format", "{{json .Config.Healthcheck}}", container.id).stdout)
    assert config and "/livez" in " ".join(config["Test"])  # kept: built with --format docker
    # No systemd here, so nothing runs it on a timer: run it once, as the engine would.
    result = container.podman("healthcheck", "run", container.id)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_has_no_scikit_learn_scipy_joblib_compiler_or_uv(served: tuple[Container, float]) -> None:
    container, _ = served
    probe = "import importlib.util as u; print([m for m in ('sklearn', 'scipy', 'joblib') if u.find_spec(m)])"
    assert container.exec("python", "-c", probe).stdout.strip() == "[]"
    for tool in ("gcc", "cc", "uv", "pip"):
        assert container.exec("sh", "-c", f"command -v {tool}").returncode != 0, tool
    metrics = httpx.get(container.url + "/metrics").text
    assert 'fast_path="True"' in metrics or 'fast_path="true"' in metrics


def test_virtual_environment_is_under_96_mb(served: tuple[Container, float]) -> None:
    container, _ = served
    size = int(container.exec("du", "-s", "--apparent-size", "-B1", "/app/.venv").stdout.split()[0])
    print(f"/app/.venv: {size / 1e6:.1f} MB")
    assert size < VENV_LIMIT_BYTES


def test_no_build_secret_is_left_in_the_image(served: tuple[Container, float], image: str) -> None:
    container, _ = served
    assert container.exec("sh", "-c", "test -e /run/secrets/ca-certificates").returncode != 0
    history = container.podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "BEGIN CERTIFICATE" not in history and "ca-certificates.crt" not in history


def test_image_labels(image: str, podman_env: dict[str, str], served: tuple[Container, float]) -> None:
    container, _ = served
    labels = json.loads(container.podman("image", "inspect", "--format", "{{json .Labels}}", image).stdout)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    oci = "org.opencontainers.image."
    assert labels[oci + "title"] == "housing-api"
    assert labels[oci + "version"] == version
    assert len(labels[oci + "revision"]) == 40  # git rev-parse HEAD of the checkout it was built from
    assert time.strptime(labels[oci + "created"], "%Y-%m-%dT%H:%M:%SZ")
    assert labels[oci + "base.name"].startswith("localhost/housing-debian:")
    assert labels[oci + "licenses"] and labels[oci + "source"]


def test_model_without_a_forest_file_refuses_to_start_with_one_line(
    image: str, podman_env: dict[str, str], tmp_path: Path
) -> None:
    # A model the compiled fast path does not cover gets no forest file; without scikit-learn in
    # the image nothing else could serve it.
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(MODEL_PATH, model / "model.joblib")
    meta = json.loads(MODEL_PATH.with_suffix(".json").read_text())
    meta.pop("forest_sha256")
    # Re-signed as train writes it (the version is the digest of model.json's content), so the
    # refusal is the missing forest's, not a rewritten model.json's.
    (model / "model.json").write_text(json.dumps({**meta, "version": manifest_digest(meta)}))
    model.chmod(0o755)
    for f in model.iterdir():
        f.chmod(0o644)
    run = Container(image, podman_env, *LIKE_THE_MANIFESTS, "-v", f"{model}:/app/model:ro")
    try:
        run.start()
        assert run.wait(timeout_s=60) == 2
        lines = [line for line in run.logs().splitlines() if line.strip() and "level=" not in line]
        assert len(lines) == 1, lines
        assert "cannot be served without scikit-learn" in lines[0] and "model.json names no forest file" in lines[0]
    finally:
        run.remove()


def test_sigterm_under_load_answers_every_accepted_request_and_exits_0(image: str, podman_env: dict[str, str]) -> None:
    container, _ = start(image, podman_env)
    try:
        batches = [[{**SAMPLE_BATCH[0], "MedInc": 1 + i + j / 1000} for j in range(300)] for i in range(8)]

        async def load() -> list[int | str]:
            limits = httpx.Limits(max_connections=len(batches))
            async with httpx.AsyncClient(base_url=container.url, timeout=60, limits=limits) as client:
                tasks = [asyncio.create_task(client.post("/predict", json=b)) for b in batches]
                await asyncio.sleep(0.3)  # the requests are sent and their rows queued
                await asyncio.to_thread(container.podman, "kill", "--signal", "TERM", container.id)
                results = await asyncio.gather(*tasks, return_exceptions=True)
                return [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in results]

        assert asyncio.run(load()) == [200] * len(batches)
        assert container.wait(timeout_s=60) == 0, container.logs()
    finally:
        container.remove()


def test_two_containers_share_redis(image: str, podman_env: dict[str, str], tmp_path: Path) -> None:
    redis = RedisServer(tmp_path).start()
    # slirp4netns lets a container reach the host's loopback (as 10.0.2.2), where the throwaway
    # redis-server listens; it is never exposed beyond 127.0.0.1.
    # Its user-mode networking is slow on a busy machine: a Redis timeout (a miss) would hide sharing.
    net = ("--network", "slirp4netns:allow_host_loopback=true", "-e", f"REDIS_URL=redis://10.0.2.2:{redis.port}/0",
           "-e", "REDIS_TIMEOUT_MS=2000")  # fmt: skip
    first = second = None
    try:
        first, _ = start(image, podman_env, *net)
        second, _ = start(image, podman_env, *net)
        rows = [{**row, "HouseAge": row["HouseAge"] + 0.5} for row in SAMPLE_BATCH]
        computed = httpx.post(first.url + "/predict", json=rows)
        assert computed.headers["x-cache"] == "MISS"
        # The first container writes its rows behind the response: wait until they are in Redis.
        assert wait_until(lambda: len(list(redis.client().scan_iter("housing:*"))) >= len(rows), 10)
        shared = httpx.post(second.url + "/predict", json=rows)
        errors = [
            m for m in httpx.get(second.url + "/metrics").text.splitlines() if m.startswith("housing_api_redis_errors")
        ]
        assert shared.headers["x-cache"] == "HIT", errors  # its own in-process tier is empty: Redis answered
        assert shared.json()["prediction"] == computed.json()["prediction"]
        assert httpx.get(second.url + "/readyz").json()["cache"] == "ok"
    finally:
        for container in (first, second):
            if container is not None:
                container.remove()
        redis.stop()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root to become another user")
def test_where_podman_cannot_run_the_base_script_says_why_in_one_line() -> None:
    # Not root, no base image in this user's store: what an ordinary user of a fresh machine meets.
    with tempfile.TemporaryDirectory() as home:  # not tmp_path: pytest's is private to root
        os.chmod(home, 0o777)
        env = {"PATH": os.environ["PATH"], "HOME": home, "HOUSING_PODMAN_DIR": f"{home}/podman",
               "HOUSING_DEBIAN_BASE_LOCK": f"{home}/lock"}  # fmt: skip
        # A copy the other user can read: a clone under /root (mode 0700) is not.
        script = shutil.copy(ROOT / "scripts" / "debian-base.sh", f"{home}/debian-base.sh")
        os.chmod(script, 0o755)
        argv = ["runuser", "-u", "nobody", "--", "env", *(f"{k}={v}" for k, v in env.items()), script]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3 and result.stdout == "", result.stderr
    # "debootstrap needs root", or "not root and podman ... missing (sudo apt-get install -y ...)"
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("debian-base: cannot run podman here: ") and "root" in line
