"""MODEL_URI parsing and the paths that need no MLflow server: a local path, a prefetched folder."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import MODEL_PATH, app_client, make_settings
from fastapi.testclient import TestClient

from housing_api.app import create_app
from housing_api.errors import InvalidModelUri, ModelArtifactMismatch, ModelArtifactMissing, RegistryUnavailable
from housing_api.model import forest_path, load_model, metadata_path, verify_artifact
from housing_api.registry import (
    CURRENT,
    PROVENANCE,
    ModelSource,
    Registry,
    RegistryRef,
    parse_ref,
    prefetched,
    redact,
    resolve_source,
)


@pytest.mark.parametrize(
    ("uri", "ref"),
    [
        ("models:/housing/7", RegistryRef("housing", version="7")),
        ("models:/housing@champion", RegistryRef("housing", alias="champion")),
        ("models:/house-prices.v2/12", RegistryRef("house-prices.v2", version="12")),
    ],
)
def test_registry_references_parse_to_a_name_and_a_version_or_alias(uri: str, ref: RegistryRef) -> None:
    assert parse_ref(uri) == ref
    assert ref.uri == uri


@pytest.mark.parametrize(
    "uri", ["models:/housing", "models:/housing/0", "models:/housing/latest", "models:/housing@", "models://x/1"]
)
def test_malformed_registry_references_are_refused_with_the_accepted_forms(uri: str) -> None:
    with pytest.raises(InvalidModelUri, match=r"models:/<name>/<version>"):
        parse_ref(uri)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://user:secret@mlflow.example.com:8443/x", "https://mlflow.example.com:8443/x"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://token@mlflow.example.com/", "https://mlflow.example.com/"),
        ("https://u:p@ss@mlflow.example.com/x", "https://mlflow.example.com/x"),
        ("s3://bucket/1/run/artifacts/model?X-Amz-Signature=secret&X-Amz-Credential=AKIA", "s3://bucket/1/run/artifacts/model"),
        ("https://mlflow.example.com/api#access_token=secret", "https://mlflow.example.com/api"),
        ("https://user:secret@[::1/x", "https://<redacted>"),
    ],
)  # fmt: skip
def test_uris_lose_credentials_query_strings_and_fragments(uri: str, shown: str) -> None:
    assert redact(uri) == shown


def test_uris_inside_mlflows_messages_are_redacted_too() -> None:
    from housing_api.registry import one_line

    message = "API request to https://svc:hunter2@mlflow.internal:5000/api/2.0/x?token=t0k failed\nmore"
    line = one_line(RuntimeError(message))
    assert "hunter2" not in line and "t0k" not in line and "https://mlflow.internal:5000/api/2.0/x" in line


def test_model_uri_with_a_local_path_overrides_model_path(tmp_path: Path) -> None:
    assert resolve_source(None, MODEL_PATH, tmp_path, None) == ModelSource(MODEL_PATH)
    assert resolve_source(str(MODEL_PATH), Path("elsewhere.joblib"), tmp_path, None) == ModelSource(MODEL_PATH)


@pytest.mark.integration
def test_a_registry_reference_needs_a_tracking_uri(tmp_path: Path) -> None:
    with pytest.raises(RegistryUnavailable, match="MLFLOW_TRACKING_URI"):
        Registry(None)


def fetched_folder(store: Path, uri: str, version: str) -> Path:
    """What `housing-api fetch-model` leaves: the files, registry.json, and current.json."""
    folder = store / "housing" / version
    folder.mkdir(parents=True)
    for path in (MODEL_PATH, metadata_path(MODEL_PATH), forest_path(MODEL_PATH)):
        shutil.copy(path, folder / path.name)
    recorded = json.loads(metadata_path(MODEL_PATH).read_text())["version"]
    provenance = {"name": "housing", "version": version, "run_id": "r1", "model_version": recorded,
                  "source": "s3://models/1/r1/artifacts/model", "tracking_uri": "https://mlflow.internal"}  # fmt: skip
    (folder / PROVENANCE).write_text(json.dumps(provenance))
    (store / CURRENT).write_text(json.dumps({"uri": uri, "name": "housing", "version": version}))
    return folder


def resign(meta_file: Path, **fields: object) -> None:
    """model.json with fields changed and its version recomputed: the most an attacker who can write
    the files (not the registry) can do to make them agree with each other."""
    meta = {**json.loads(meta_file.read_text()), **fields}
    if "joblib_sha256" in meta:  # the version is model.json's digest: recompute it (else it is the joblib's)
        content = {k: v for k, v in meta.items() if k != "version"}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        meta = {"version": hashlib.sha256(canonical.encode()).hexdigest(), **content}
    meta_file.write_text(json.dumps(meta))


def swap_forest(folder: Path) -> None:
    """Another forest (derived pairs changed, so other answers), its sha256 written into model.json."""
    forest = folder / "model.forest.npz"
    with np.load(forest) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["derived_pairs"] = np.array([[1, 2]] * 6, dtype=np.int64)
    with forest.open("wb") as file:
        np.savez_compressed(file, **arrays)
    resign(folder / "model.json", forest_sha256=hashlib.sha256(forest.read_bytes()).hexdigest())


def load_prefetched(store: Path, uri: str) -> None:
    """What the API container does with a fetched folder (serve's verify_artifact is tested beside)."""
    source = prefetched(parse_ref(uri), store)
    load_model(source.path, source.registry)


def test_a_fetched_folder_with_a_swapped_forest_and_rewritten_forest_sha256_is_refused_at_load(
    tmp_path: Path,
) -> None:
    """Defect 2 (issue 21): model.json rewritten to vouch for a swapped forest, consistently; the
    version the registry recorded (registry.json, written by the fetch) no longer matches."""
    swap_forest(fetched_folder(tmp_path, "models:/housing/3", "3"))
    with pytest.raises(ModelArtifactMismatch, match="registry recorded") as refused:
        load_prefetched(tmp_path, "models:/housing/3")
    assert "\n" not in str(refused.value)
    source = prefetched(parse_ref("models:/housing/3"), tmp_path)
    with pytest.raises(ModelArtifactMismatch, match="registry recorded"):
        verify_artifact(source.path, source.registry)


def test_a_fetched_folder_with_a_rewritten_model_json_is_refused_at_load(tmp_path: Path) -> None:
    folder = fetched_folder(tmp_path, "models:/housing/3", "3")
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "holdout_r2": 0.99}))
    with pytest.raises(ModelArtifactMismatch, match="rewritten"):
        load_prefetched(tmp_path, "models:/housing/3")
    resign(folder / "model.json", holdout_r2=0.99)
    with pytest.raises(ModelArtifactMismatch, match="registry recorded"):
        load_prefetched(tmp_path, "models:/housing/3")


@pytest.mark.parametrize("name", ["model.joblib_01.npy", "extra.pkl", ".hidden", "model.forest.npz"])
def test_a_fetched_folder_holding_an_unexpected_file_is_refused_at_load(tmp_path: Path, name: str) -> None:
    folder = fetched_folder(tmp_path, "models:/housing/3", "3")
    if name == "model.forest.npz":  # there, but model.json does not name it: nothing vouches for it
        resign(folder / "model.json", forest_sha256=None, forest_format=None)
        # A genuine version without a forest file: the registry recorded this model.json's version.
        provenance = json.loads((folder / PROVENANCE).read_text())
        recorded = json.loads((folder / "model.json").read_text())["version"]
        (folder / PROVENANCE).write_text(json.dumps({**provenance, "model_version": recorded}))
    else:
        (folder / name).write_bytes(b"anything")
    with pytest.raises(ModelArtifactMismatch, match=f"holds {re.escape(name)}, which nothing"):
        load_prefetched(tmp_path, "models:/housing/3")


def test_without_mlflow_the_folder_fetched_for_the_same_uri_is_served(tmp_path: Path) -> None:
    folder = fetched_folder(tmp_path, "models:/housing@champion", "3")
    source = prefetched(parse_ref("models:/housing@champion"), tmp_path)
    assert source.path == folder / "model.joblib"
    assert source.registry == {
        "name": "housing", "version": "3", "run_id": "r1", "uri": "models:/housing@champion", "alias": "champion",
        "model_version": load_model(MODEL_PATH).version, "source": "s3://models/1/r1/artifacts/model",
        "tracking_uri": "https://mlflow.internal",
    }  # fmt: skip
    assert load_model(source.path).version == load_model(MODEL_PATH).version


def test_without_mlflow_a_folder_fetched_for_another_uri_is_refused(tmp_path: Path) -> None:
    fetched_folder(tmp_path, "models:/housing/3", "3")
    with pytest.raises(ModelArtifactMissing, match="not MODEL_URI models:/housing/4"):
        prefetched(parse_ref("models:/housing/4"), tmp_path)
    with pytest.raises(ModelArtifactMissing, match="fetch-model"):
        prefetched(parse_ref("models:/housing/4"), tmp_path / "empty")


def test_model_endpoint_names_the_registered_version_not_where_it_is_stored(tmp_path: Path) -> None:
    """Defect 8 (issue 21): /model is public in prod. It names the version, never the artifact
    store's URI or the tracking server, redacted or not."""
    folder = fetched_folder(tmp_path, "models:/housing/3", "3")
    secret = "s3://AKIA:hunter2@internal-models/1/r1/artifacts/model?X-Amz-Signature=sig"
    provenance = json.loads((folder / PROVENANCE).read_text())
    (folder / PROVENANCE).write_text(
        json.dumps({**provenance, "source": secret, "tracking_uri": "https://u:p@mlflow.internal"})
    )
    source = prefetched(parse_ref("models:/housing/3"), tmp_path)
    with TestClient(create_app(make_settings(), source)) as client:
        response = client.get("/model")
    registry = response.json()["registry"]
    assert registry == {"name": "housing", "version": "3", "run_id": "r1", "uri": "models:/housing/3",
                        "model_version": response.json()["version"]}  # fmt: skip
    for leak in ("hunter2", "AKIA", "internal-models", "mlflow.internal", "X-Amz", "u:p@"):
        assert leak not in response.text


def test_model_endpoint_names_no_registry_for_a_local_model() -> None:
    with app_client() as client:
        body = client.get("/model").json()
    assert body["registry"] is None
    assert body["version"] == load_model(MODEL_PATH).version
