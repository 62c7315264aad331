"""MODEL_URI parsing and the paths that need no MLflow server: a local path, a prefetched folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import MODEL_PATH, app_client

from housing_api.errors import InvalidModelUri, ModelArtifactMissing, RegistryUnavailable
from housing_api.model import forest_path, load_model, metadata_path
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


def test_tracking_uri_credentials_never_reach_logs_or_model_metadata() -> None:
    assert redact("https://user:secret@mlflow.example.com:8443/x") == "https://mlflow.example.com:8443/x"
    assert redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_model_uri_with_a_local_path_overrides_model_path(tmp_path: Path) -> None:
    assert resolve_source(None, MODEL_PATH, tmp_path, None) == ModelSource(MODEL_PATH)
    assert resolve_source(str(MODEL_PATH), Path("elsewhere.joblib"), tmp_path, None) == ModelSource(MODEL_PATH)


def test_a_registry_reference_needs_a_tracking_uri(tmp_path: Path) -> None:
    with pytest.raises(RegistryUnavailable, match="MLFLOW_TRACKING_URI"):
        Registry(None)


def fetched_folder(store: Path, uri: str, version: str) -> Path:
    """What `housing-api fetch-model` leaves: the files, registry.json, and current.json."""
    folder = store / "housing" / version
    folder.mkdir(parents=True)
    for path in (MODEL_PATH, metadata_path(MODEL_PATH), forest_path(MODEL_PATH)):
        shutil.copy(path, folder / path.name)
    (folder / PROVENANCE).write_text(json.dumps({"name": "housing", "version": version, "run_id": "r1"}))
    (store / CURRENT).write_text(json.dumps({"uri": uri, "name": "housing", "version": version}))
    return folder


def test_without_mlflow_the_folder_fetched_for_the_same_uri_is_served(tmp_path: Path) -> None:
    folder = fetched_folder(tmp_path, "models:/housing@champion", "3")
    source = prefetched(parse_ref("models:/housing@champion"), tmp_path)
    assert source.path == folder / "model.joblib"
    assert source.registry == {
        "name": "housing", "version": "3", "run_id": "r1", "uri": "models:/housing@champion", "alias": "champion"
    }  # fmt: skip
    assert load_model(source.path).version == load_model(MODEL_PATH).version


def test_without_mlflow_a_folder_fetched_for_another_uri_is_refused(tmp_path: Path) -> None:
    fetched_folder(tmp_path, "models:/housing/3", "3")
    with pytest.raises(ModelArtifactMissing, match="not MODEL_URI models:/housing/4"):
        prefetched(parse_ref("models:/housing/4"), tmp_path)
    with pytest.raises(ModelArtifactMissing, match="fetch-model"):
        prefetched(parse_ref("models:/housing/4"), tmp_path / "empty")


def test_model_endpoint_names_no_registry_for_a_local_model() -> None:
    with app_client() as client:
        body = client.get("/model").json()
    assert body["registry"] is None
    assert body["version"] == load_model(MODEL_PATH).version
