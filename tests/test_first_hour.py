"""A newcomer's first mistakes each get one line that says what to do.

The quickstart itself on a bare Debian 12 is proven by `make fresh-test` (a container, minutes);
these pin the answers: model paths, the body's shape, the README's commands, a missing tool.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, client  # noqa: F401  (client is a fixture)
from fastapi.testclient import TestClient

from housing_api.model import DEFAULT_MODEL_PATH, how_to_get_a_model

README = (ROOT / "README.md").read_text()
ROW = {"MedInc": 8.3252, "HouseAge": 42, "AveRooms": 6.98, "AveBedrms": 1.02,
       "Population": 322, "AveOccup": 2.55, "Latitude": 37.88, "Longitude": -122.23}  # fmt: skip


def serve_refusal(model_path: str) -> str:
    """The one line `housing-api serve` prints when it cannot start with MODEL_PATH=model_path."""
    env = {**os.environ, "MODEL_PATH": model_path}
    result = subprocess.run(
        [sys.executable, "-m", "housing_api", "serve", "--port", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- MODEL_PATH ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_model_path_train_never_wrote_points_at_the_committed_model_and_train_out() -> None:
    line = serve_refusal("model/nope.joblib")
    assert "unset MODEL_PATH to use the committed model/model.joblib" in line
    assert "`housing-api train --out model/nope.joblib`" in line  # writes exactly there


@pytest.mark.integration
def test_model_path_of_a_folder_names_the_artifact_in_it() -> None:
    line = serve_refusal("model")
    assert line.endswith("MODEL_PATH=model is a folder; name the artifact in it: MODEL_PATH=model/model.joblib")


@pytest.mark.integration
def test_model_path_of_an_empty_folder_names_the_file_train_writes(tmp_path: Path) -> None:
    line = serve_refusal(str(tmp_path))
    assert line.endswith(f"name the artifact in it: MODEL_PATH={tmp_path / 'model.joblib'}")


@pytest.mark.integration
def test_model_path_of_the_metadata_names_the_artifact_beside_it() -> None:
    line = serve_refusal("model/model.json")
    assert line.endswith("name the artifact beside it: MODEL_PATH=model/model.joblib")


def test_missing_default_model_says_restore_or_retrain() -> None:
    assert "git checkout model/" in how_to_get_a_model(DEFAULT_MODEL_PATH)
    assert "housing-api train" in how_to_get_a_model(DEFAULT_MODEL_PATH)


# --- the body's shape ---------------------------------------------------------------------------


def test_the_labs_object_body_gets_a_422_that_says_send_the_list_itself(client: TestClient) -> None:  # noqa: F811
    response = client.post("/predict", json={"houses": [ROW, ROW]})
    assert response.status_code == 422
    body = response.json()
    assert body["detail"].startswith("the body must be a JSON array of rows, [{")
    assert body["detail"].endswith('send the list under "houses" itself, not an object around it')
    assert body["errors"] == [{"row": None, "field": None, "message": body["detail"]}]


def test_a_single_row_gets_a_422_that_says_wrap_it_in_brackets(client: TestClient) -> None:  # noqa: F811
    response = client.post("/predict", json=ROW)
    assert response.status_code == 422
    assert response.json()["detail"].endswith("wrap a single row in [ ]")
    assert client.post("/predict", json=[ROW]).status_code == 200


def test_a_hostile_key_is_not_echoed_back_whole(client: TestClient) -> None:  # noqa: F811
    response = client.post("/predict", json={"k" * 10_000: [ROW]})
    assert response.status_code == 422
    assert len(response.json()["detail"]) < 300


# --- the README's commands ----------------------------------------------------------------------


def test_readme_calls_the_cli_where_make_install_puts_it() -> None:
    # `make install` does not put .venv/bin on PATH: a bare `housing-api ...` is "command not found".
    bare = re.findall(r"(?<![/\w-])housing-api (?:serve|train)\b", README)
    assert bare == [], "call it as .venv/bin/housing-api in the README"


def test_readme_says_how_to_move_make_run() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^HOST\s+\?= 127\.0\.0\.1$", makefile, flags=re.M)
    assert re.search(r"^PORT\s+\?= 8000$", makefile, flags=re.M)
    assert "make run HOST=0.0.0.0 PORT=8080" in README


def test_readme_lists_the_prerequisites_make_does_not_install_in_one_line() -> None:
    line = next(line for line in README.splitlines() if line.startswith("Not installed for you:"))
    for package in ("git", "make", "python3"):
        assert re.search(rf"\b{package}\b", line), package


# --- a missing tool -----------------------------------------------------------------------------


@pytest.mark.integration
def test_install_deps_without_apt_prints_the_one_command_and_stops(tmp_path: Path) -> None:
    # Only python3 and id on PATH: no compiler, no redis-server, no uv, no apt-get (so, even as
    # root, nothing is installed: the script must say what to run).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    (bin_dir / "id").symlink_to(shutil.which("id") or pytest.fail("id not found"))
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(ROOT / "scripts/install-deps.sh")],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(r"run: sudo apt-get update && sudo apt-get install -y .*\bgcc\b.*\bredis-server\b", lines[0])


DEPLOYMENT_MODULE = """
import pytest
from conftest import KUBECTL_INSTALL

@pytest.fixture
def rendered():
    pytest.skip(f"no kubectl; {KUBECTL_INSTALL}")

def test_renders(rendered): pass
def test_validates(rendered): pass
def test_needs_no_render(): pass
"""


def run_deployment_module(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A test_k8s_manifests.py whose render skips, under the real tests/conftest.py."""
    tests = tmp_path / "tests"
    tests.mkdir(exist_ok=True)
    for module in ("conftest.py", "kinds.py"):
        shutil.copy(ROOT / "tests" / module, tests / module)
    (tests / "test_k8s_manifests.py").write_text(DEPLOYMENT_MODULE)
    environ = {k: v for k, v in os.environ.items() if k != "CI"} | env
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, "tests"],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.integration
def test_skipped_deployment_tests_end_the_run_with_one_loud_line(tmp_path: Path) -> None:
    result = run_deployment_module(tmp_path)
    assert result.returncode == 0, result.stdout
    last = result.stdout.splitlines()[-1]
    assert last.startswith("DEPLOYMENT TESTS NOT RUN: 2 skipped; no kubectl; install it with: uv sync --frozen")


@pytest.mark.integration
def test_the_loud_line_comes_from_xdist_workers_too(tmp_path: Path) -> None:
    result = run_deployment_module(tmp_path, "-n", "2")
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1].startswith("DEPLOYMENT TESTS NOT RUN: 2 skipped; no kubectl")


@pytest.mark.integration
def test_under_ci_a_skipped_deployment_test_fails(tmp_path: Path) -> None:
    result = run_deployment_module(tmp_path, CI="true")
    assert result.returncode == 1, result.stdout
    assert re.search(r"^1 passed, .*2 errors", result.stdout, flags=re.M)
    assert result.stdout.splitlines()[-1].startswith("DEPLOYMENT TESTS FAILED under CI=true: 2 skipped")


# --- make fresh-test's verdict on skips ---------------------------------------------------------


def junit(*cases: tuple[str, str, str | None]) -> str:
    body = "".join(
        f'<testcase classname="{cls}" name="{name}">'
        + (f'<skipped type="pytest.skip" message="{why}"/>' if why else "")
        + "</testcase>"
        for cls, name, why in cases
    )
    return f'<testsuites><testsuite name="pytest">{body}</testsuite></testsuites>'


def check_skips(tmp_path: Path, xml: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "junit.xml").write_text(xml)
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts/check_skips.py"), str(tmp_path / "junit.xml"), str(ROOT / "README.md")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.integration
def test_fresh_test_allows_only_the_skips_the_readme_lists(tmp_path: Path) -> None:
    allowed = ("tests.unit.test_model", "test_training_reproduces_the_committed_metrics", "no data")
    passed = ("tests.unit.test_api", "test_sample_batch", None)
    assert check_skips(tmp_path, junit(allowed, passed)).returncode == 0
    result = check_skips(
        tmp_path, junit(allowed, passed, ("tests.deployment.test_k8s_manifests", "test_renders", "no kubectl"))
    )
    assert result.returncode == 1
    assert "tests.deployment.test_k8s_manifests.test_renders: no kubectl" in result.stdout


@pytest.mark.parametrize(
    "skipped",
    [
        ("tests.image.test_image", "test_healthcheck_passes"),
        ("tests.deployment.test_k8s_image", "test_manifests_match_the_built_image[base]"),
        ("tests.deployment.test_k8s_image", "test_the_image_answers_every_probe_run_as_the_manifests_run_it"),
    ],
)
@pytest.mark.integration
def test_fresh_test_fails_when_an_image_test_skips(tmp_path: Path, skipped: tuple[str, str]) -> None:
    # make fresh-test's container is privileged, as a fresh VM's root: podman runs there, so nothing that
    # needs the image may skip (the README's answer for an unprivileged container sits outside the list).
    why = "debian-base: cannot run podman here: a container does not start"
    result = check_skips(tmp_path, junit((*skipped, why)))
    assert result.returncode == 1, result.stdout
    assert f"{'.'.join(skipped)}: {why}" in result.stdout
