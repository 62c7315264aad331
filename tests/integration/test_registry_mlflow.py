"""Models from a real MLflow registry: train and register, serve a pinned version, follow an alias,
and refuse a tampered artifact, a missing version and an unreachable server with one line.

One MLflow tracking server (SQLite backend, local artifact folder, on a free port) serves the whole
module; two quick versions are trained and registered through `housing-api train --register`.
Every service here is a real `housing-api serve` process.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from housing_api import FEATURES
from housing_api.cli import main
from housing_api.errors import ModelArtifactMismatch, ModelVersionNotFound
from housing_api.model import load_model
from housing_api.registry import Registry, parse_ref, prefetched, resolve_source
from housing_api.train import register, train
from housing_api_testing.harness import ROOT, MLflowServer, RedisServer, ServiceProcess, Unavailable, free_port

pytestmark = pytest.mark.integration

DATA = ROOT.parent / "shared" / "data" / "sklearn"
SERVE_FAILURE_TIMEOUT_S = 180


@dataclass(frozen=True)
class Trained:
    """A version registered by `housing-api train --register`, and the files it was trained into."""

    number: str
    path: Path

    @property
    def sha256(self) -> str:
        return str(json.loads(self.path.with_suffix(".json").read_text())["version"])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLflowServer]:
    if not (DATA / "cal_housing_py3.pkz").is_file():
        pytest.skip(f"offline data copy not found at {DATA}")
    try:
        server = MLflowServer(tmp_path_factory.mktemp("mlflow"))
    except Unavailable as exc:
        if os.environ.get("CI"):
            raise  # CI installs the dev group, which has MLflow: a skip there would hide a broken install
        pytest.skip(str(exc))
    server.start()
    yield server
    server.stop()


def train_and_register(server: MLflowServer, out: Path, max_iter: int, *extra: str) -> str:
    """`housing-api train --register` with a quick model; the registered version's number."""
    env = {**os.environ, "SCIKIT_LEARN_DATA": str(DATA), "MLFLOW_TRACKING_URI": server.url, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "housing_api", "train", "--out", str(out), "--max-iter", str(max_iter), "--register",
         *extra],
        env=env, capture_output=True, text=True, timeout=600, cwd=out.parent.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"^registered models:/housing/(\d+) ", result.stdout, re.MULTILINE)
    assert match, result.stdout
    return match[1]


@pytest.fixture(scope="module")
def versions(mlflow_server: MLflowServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Trained, Trained]:
    """Versions 1 and 2 of `housing`: 10 and 30 trees, so their predictions differ on every row.
    The alias `champion` points at version 1 (set by train --alias)."""
    root = tmp_path_factory.mktemp("trained")
    first = Trained(train_and_register(mlflow_server, root / "v1" / "model.joblib", 10, "--alias", "champion"),
                    root / "v1" / "model.joblib")  # fmt: skip
    # The second in this process: the same code as the CLI's, without paying MLflow's import again.
    second_path = root / "v2" / "model.joblib"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SCIKIT_LEARN_DATA", str(DATA))
        result = train(second_path, max_iter=30)
    second = Trained(register(Registry(mlflow_server.url), second_path, result, "housing").version, second_path)
    assert (first.number, second.number) == ("1", "2")
    return first, second


def rows(n: int = 40) -> list[dict[str, float]]:
    rng = np.random.default_rng(11)
    values = rng.uniform([0.5, 1, 1, 0.5, 10, 1, 33, -124], [15, 52, 10, 2, 5000, 6, 42, -114], size=(n, 8))
    return [dict(zip(FEATURES, map(float, row), strict=True)) for row in values.round(4)]


def expected(version: Trained, batch: list[dict[str, float]]) -> list[float]:
    """What the files trained for this version predict, loaded locally (not through the registry)."""
    X = np.array([[row[f] for f in FEATURES] for row in batch])
    return [float(v) for v in load_model(version.path).predict(X)]


def serve(tmp_path: Path, name: str, **env: str) -> ServiceProcess:
    return ServiceProcess({"MODEL_STORE": str(tmp_path / f"store-{name}"), **env}, tmp_path / f"{name}.log").start()


def predict(service: ServiceProcess, batch: list[dict[str, float]]) -> tuple[list[float], str]:
    response = httpx.post(service.url + "/predict", json=batch, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["prediction"], response.headers["X-Cache"]


def test_train_register_logs_params_metrics_data_checksum_and_files(
    mlflow_server: MLflowServer, versions: tuple[Trained, Trained]
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    for version in versions:
        mv = client.get_model_version("housing", version.number)
        meta = json.loads(version.path.with_suffix(".json").read_text())
        assert mv.tags["housing_api.version"] == meta["version"]
        run = client.get_run(mv.run_id)
        assert run.data.metrics["holdout_r2"] == pytest.approx(meta["holdout_r2"], abs=1e-6)
        assert run.data.metrics["holdout_mae"] == pytest.approx(meta["holdout_mae"], abs=1e-6)
        assert run.data.params["max_iter"] == str(meta["params"]["max_iter"])
        assert run.data.params["data_sha256"] == meta["data_sha256"]
        logged = {item.path for item in client.list_artifacts(mv.run_id, "model")}
        assert logged == {"model/model.joblib", "model/model.forest.npz", "model/model.json"}
    assert client.get_model_version_by_alias("housing", "champion").version == versions[0].number


def test_pinned_versions_serve_their_own_predictions_from_one_redis_without_crossing(
    mlflow_server: MLflowServer, versions: tuple[Trained, Trained], tmp_path: Path
) -> None:
    first, second = versions
    batch = rows()
    want1, want2 = expected(first, batch), expected(second, batch)
    # Otherwise a value served from the other version's cache entry could pass unnoticed.
    assert all(a != b for a, b in zip(want1, want2, strict=True))
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis").start()
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url, "REDIS_URL": redis.url}
    one = serve(tmp_path, "v1", MODEL_URI="models:/housing/1", **env)
    two = serve(tmp_path, "v2", MODEL_URI="models:/housing/2", **env)
    try:
        assert predict(one, batch) == (want1, "MISS")
        # The same rows, now in Redis under version 1's keys: version 2 must not take them.
        assert predict(two, batch) == (want2, "MISS")
        assert predict(one, batch) == (want1, "HIT")
        assert predict(two, batch) == (want2, "HIT")
        for service, version in ((one, first), (two, second)):
            model = httpx.get(service.url + "/model", timeout=10).json()
            assert model["version"] == version.sha256
            assert model["registry"]["uri"] == f"models:/housing/{version.number}"
            assert model["registry"]["version"] == version.number
            assert httpx.get(service.url + "/readyz", timeout=10).json()["model_version"] == version.sha256
            metrics = httpx.get(service.url + "/metrics", timeout=10).text
            info = [line for line in metrics.splitlines() if line.startswith("housing_api_model_info{")]
            assert len(info) == 1 and f'version="{version.sha256}"' in info[0] and info[0].endswith(" 1.0")
        # Both versions' answers sit side by side in the one Redis, each under its own version.
        namespaces = {key.decode().split(":")[1] for key in redis.client().scan_iter(count=1000)}
        assert {first.sha256[:16], second.sha256[:16]} <= namespaces
    finally:
        one.stop()
        two.stop()
        redis.stop()


def test_a_new_process_follows_an_alias_moved_to_another_version(
    mlflow_server: MLflowServer, versions: tuple[Trained, Trained], tmp_path: Path
) -> None:
    first, second = versions
    batch = rows(8)
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url, "MODEL_URI": "models:/housing@champion"}
    registry = Registry(mlflow_server.url)
    registry.set_alias("housing", "champion", first.number)
    try:
        # Both processes share one store: a version fetched once must not pin the alias.
        before = serve(tmp_path, "alias", **env)
        try:
            assert predict(before, batch)[0] == expected(first, batch)
            assert httpx.get(before.url + "/model", timeout=10).json()["registry"]["version"] == first.number
        finally:
            before.stop()
        registry.set_alias("housing", "champion", second.number)
        after = serve(tmp_path, "alias", **env)
        try:
            assert predict(after, batch)[0] == expected(second, batch)
            body = httpx.get(after.url + "/model", timeout=10).json()
            assert body["version"] == second.sha256
            assert body["registry"]["alias"] == "champion" and body["registry"]["version"] == second.number
        finally:
            after.stop()
    finally:
        registry.set_alias("housing", "champion", first.number)


def serve_failure(tmp_path: Path, name: str, **env: str) -> subprocess.Popen[str]:
    """`housing-api serve` expected to refuse to start: started now, awaited by failure_line()."""
    return subprocess.Popen(
        [sys.executable, "-m", "housing_api", "serve", "--port", str(free_port())],
        env={**os.environ, "MODEL_STORE": str(tmp_path / f"store-{name}"), **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip


def failure_line(process: subprocess.Popen[str]) -> str:
    """The one line a refused start prints (stdout and stderr together, nothing else)."""
    try:
        stdout, stderr = process.communicate(timeout=SERVE_FAILURE_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 2, stderr[-3000:]
    lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
    assert len(lines) == 1, stdout + stderr
    assert lines[0].startswith("housing-api: cannot start: ")
    return lines[0]


def clone_version(server: MLflowServer, number: str) -> tuple[str, Path]:
    """Register version `number`'s files again as a new version with the same tags, through MLflow's
    client alone: a version the registry vouches for exactly as it vouches for `number`. Returns its
    number and its folder in the artifact store (for the attacker to write)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.url, registry_uri=server.url)
    mv = client.get_model_version("housing", number)
    experiment = client.get_experiment_by_name("housing-api")
    assert experiment is not None
    run = client.create_run(experiment.experiment_id)
    client.log_artifacts(run.info.run_id, str(stored_files(server, mv.run_id)), "model")
    client.set_terminated(run.info.run_id)
    new = client.create_model_version("housing", f"{run.info.artifact_uri}/model", run.info.run_id, tags=mv.tags)
    return str(new.version), stored_files(server, run.info.run_id)


def stored_files(server: MLflowServer, run_id: str) -> Path:
    return next(server.artifacts.glob(f"*/{run_id}/artifacts/model"))


def rewrite_model_json(folder: Path, **fields: object) -> None:
    """model.json with fields changed, made to agree with itself as far as its format lets a writer:
    where the version is the digest of model.json's content (joblib_sha256 present), recomputed."""
    meta = {**json.loads((folder / "model.json").read_text()), **fields}
    if "joblib_sha256" in meta:
        content = {k: v for k, v in meta.items() if k != "version"}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        meta["version"] = hashlib.sha256(canonical.encode()).hexdigest()
    (folder / "model.json").write_text(json.dumps(meta))


def tamper_registry(mlflow_server: MLflowServer, trained: Trained, rewrite_model_json_too: bool) -> str:
    """A new version vouched for like trained's, then model.joblib changed in the artifact store
    (and, if asked, model.json rewritten to match it). Returns the new version's number."""
    number, stored = clone_version(mlflow_server, trained.number)
    joblib_file = stored / "model.joblib"
    joblib_file.write_bytes(joblib_file.read_bytes() + b"\x00")
    if rewrite_model_json_too:
        digest = hashlib.sha256(joblib_file.read_bytes()).hexdigest()
        meta = json.loads((stored / "model.json").read_text())
        rewrite_model_json(stored, **({"joblib_sha256": digest} if "joblib_sha256" in meta else {"version": digest}))
    return number


def swap_forest(mlflow_server: MLflowServer, victim: Trained, donor: Trained) -> str:
    """Defect 2's attack: a version vouched for like victim's whose artifact store now holds donor's
    forest file (another genuine model's), with model.json's forest_sha256 rewritten to match."""
    number, stored = clone_version(mlflow_server, victim.number)
    forest = donor.path.with_suffix(".forest.npz").read_bytes()
    (stored / "model.forest.npz").write_bytes(forest)
    rewrite_model_json(stored, forest_sha256=hashlib.sha256(forest).hexdigest())
    return number


def test_tampered_artifacts_missing_versions_and_an_unreachable_registry_stop_startup_with_one_line(
    mlflow_server: MLflowServer, versions: tuple[Trained, Trained], tmp_path: Path
) -> None:
    first, _ = versions
    tampered = tamper_registry(mlflow_server, first, rewrite_model_json_too=False)
    registry = {"MLFLOW_TRACKING_URI": mlflow_server.url}
    # Started together: each pays MLflow's import time.
    processes = {
        "tampered": serve_failure(tmp_path, "tampered", MODEL_URI=f"models:/housing/{tampered}", **registry),
        "missing": serve_failure(tmp_path, "missing", MODEL_URI="models:/housing/99", **registry),
        "unreachable": serve_failure(
            tmp_path,
            "unreachable",
            MODEL_URI="models:/housing/1",
            MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}",
        ),
    }
    lines = {name: failure_line(process) for name, process in processes.items()}
    assert "sha256" in lines["tampered"] and "refusing" in lines["tampered"]
    assert "models:/housing/99 does not exist" in lines["missing"]
    assert "is unreachable" in lines["unreachable"] and "MLFLOW_TRACKING_URI" in lines["unreachable"]


def test_files_rewritten_to_match_each_other_are_refused_by_the_registrys_record(
    mlflow_server: MLflowServer, versions: tuple[Trained, Trained], tmp_path: Path
) -> None:
    """model.joblib changed and model.json rewritten to its sha256: the files agree, the registry does not."""
    first, _ = versions
    rewritten = tamper_registry(mlflow_server, first, rewrite_model_json_too=True)
    with pytest.raises(ModelArtifactMismatch, match=f"registry recorded {first.sha256}"):
        resolve_source(f"models:/housing/{rewritten}", Path("unused"), tmp_path, mlflow_server.url)
    with pytest.raises(ModelVersionNotFound, match="models:/housing@nobody does not exist"):
        resolve_source("models:/housing@nobody", Path("unused"), tmp_path, mlflow_server.url)


def test_fetch_model_fills_the_store_that_a_process_without_mlflow_serves_from(
    mlflow_server: MLflowServer, versions: tuple[Trained, Trained], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The Kubernetes init container's command; what the API container then reads without MLflow's
    client is prefetched() (test_registry_unit)."""
    _, second = versions
    for name, value in {"MLFLOW_TRACKING_URI": mlflow_server.url, "MODEL_URI": "models:/housing@champion",
                        "MODEL_STORE": str(tmp_path / "store")}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    Registry(mlflow_server.url).set_alias("housing", "champion", second.number)
    try:
        assert main(["fetch-model"]) == 0
    finally:
        Registry(mlflow_server.url).set_alias("housing", "champion", "1")
    assert f"= models:/housing/2 (version {second.sha256[:16]})" in capsys.readouterr().out
    folder = tmp_path / "store" / "housing" / "2"
    assert {p.name for p in folder.iterdir()} == {"model.joblib", "model.forest.npz", "model.json", "registry.json"}
    assert json.loads((tmp_path / "store" / "current.json").read_text())["uri"] == "models:/housing@champion"
    for name in ("model.joblib", "model.json", "model.forest.npz"):
        assert (folder / name).read_bytes() == second.path.with_name(name).read_bytes()
    source = prefetched(parse_ref("models:/housing@champion"), tmp_path / "store")
    assert source.path == folder / "model.joblib" and dict(source.registry or {})["version"] == "2"


def test_a_swapped_forest_with_a_rewritten_forest_sha256_is_refused_at_fetch_and_at_load(
    mlflow_server: MLflowServer, versions: tuple[Trained, Trained], tmp_path: Path
) -> None:
    """Defect 2 (issue 21): version 2's forest file put in place of version 1's in the artifact store,
    model.json rewritten to vouch for it. Before, fetch and load passed and version 2's answers went
    into the cache under version 1's keys."""
    first, second = versions
    swapped = swap_forest(mlflow_server, first, second)
    with pytest.raises(ModelArtifactMismatch, match=f"registry recorded {first.sha256}"):
        resolve_source(f"models:/housing/{swapped}", Path("unused"), tmp_path / "store", mlflow_server.url)
    assert not (tmp_path / "store" / "housing" / swapped).exists()  # refused before it entered the store
    line = failure_line(serve_failure(tmp_path, "swapped", MODEL_URI=f"models:/housing/{swapped}",
                                      MLFLOW_TRACKING_URI=mlflow_server.url))  # fmt: skip
    assert "registry recorded" in line and "refusing" in line
    # At load: a genuine fetch, then the same swap in the fetched folder (a store kept between starts).
    genuine, _ = clone_version(mlflow_server, first.number)
    source = resolve_source(f"models:/housing/{genuine}", Path("unused"), tmp_path / "store", mlflow_server.url)
    assert load_model(source.path, source.registry).version == first.sha256
    forest = second.path.with_suffix(".forest.npz").read_bytes()
    source.path.with_suffix(".forest.npz").write_bytes(forest)
    rewrite_model_json(source.path.parent, forest_sha256=hashlib.sha256(forest).hexdigest())
    with pytest.raises(ModelArtifactMismatch, match=f"registry recorded {first.sha256}"):
        load_model(source.path, source.registry)
    with pytest.raises(ModelArtifactMismatch, match=f"registry recorded {first.sha256}"):
        resolve_source(f"models:/housing/{genuine}", Path("unused"), tmp_path / "store", mlflow_server.url)


def test_a_rewritten_model_json_is_refused_at_fetch(
    mlflow_server: MLflowServer, versions: tuple[Trained, Trained], tmp_path: Path
) -> None:
    """Any field: here the held-out R² /model shows, rewritten as consistently as the format allows."""
    first, _ = versions
    number, stored = clone_version(mlflow_server, first.number)
    rewrite_model_json(stored, holdout_r2=0.99)
    with pytest.raises(ModelArtifactMismatch, match="registry recorded"):
        resolve_source(f"models:/housing/{number}", Path("unused"), tmp_path, mlflow_server.url)


@pytest.mark.parametrize("name", ["model.joblib_01.npy", "registry.json"])
def test_an_unexpected_file_in_the_artifact_store_is_refused_at_fetch(
    mlflow_server: MLflowServer, versions: tuple[Trained, Trained], tmp_path: Path, name: str
) -> None:
    """joblib reads model.joblib_01.npy beside a pickle; a registry.json would pose as the fetch's own."""
    first, _ = versions
    number, stored = clone_version(mlflow_server, first.number)
    (stored / name).write_text(json.dumps({"model_version": first.sha256}))
    with pytest.raises(ModelArtifactMismatch, match=f"holds {name} at"):
        resolve_source(f"models:/housing/{number}", Path("unused"), tmp_path, mlflow_server.url)


def test_a_version_registered_under_the_old_scheme_is_refused_and_reregistered_by_the_named_command(
    mlflow_server: MLflowServer, versions: tuple[Trained, Trained], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The migration (docs/deployment.md): a version whose tag vouches for model.joblib alone is refused
    with one line naming `housing-api reregister`, which registers a version that serves the same answers."""
    from mlflow.tracking import MlflowClient

    first, _ = versions
    number, stored = clone_version(mlflow_server, first.number)
    client = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    meta = json.loads((stored / "model.json").read_text())
    old_version = meta.pop("joblib_sha256")
    (stored / "model.json").write_text(json.dumps({**meta, "version": old_version}))
    client.delete_model_version_tag("housing", number, "housing_api.version")
    client.set_model_version_tag("housing", number, "housing_api.sha256", old_version)
    line = failure_line(serve_failure(tmp_path, "legacy", MODEL_URI=f"models:/housing/{number}",
                                      MLFLOW_TRACKING_URI=mlflow_server.url))  # fmt: skip
    assert f"Re-register it: housing-api reregister models:/housing/{number}" in line
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    assert main(["reregister", f"models:/housing/{number}"]) == 0
    match = re.search(r"^registered models:/housing/(\d+) ", capsys.readouterr().out, re.MULTILINE)
    assert match
    source = resolve_source(f"models:/housing/{match[1]}", Path("unused"), tmp_path / "store", mlflow_server.url)
    model = load_model(source.path, source.registry)
    batch = rows(20)
    assert [float(v) for v in model.predict(np.array([[r[f] for f in FEATURES] for r in batch]))] == expected(
        first, batch
    )
    assert source.path.read_bytes() == first.path.read_bytes()
    assert (
        client.get_model_version("housing", match[1]).tags["housing_api.reregistered_from"]
        == f"models:/housing/{number}"
    )
