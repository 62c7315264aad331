"""train.py in this process, without the California data: what a written artifact records, that a
re-write of the same model keeps its version, and the one message when the data is missing. (A whole
`housing-api train` run: tests/integration/test_train_cli.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from housing_api import FEATURES
from housing_api.errors import TrainingDataMissing
from housing_api.model import load_model
from housing_api.train import build_estimator, data_sha256, describe, load_dataset, previous_created_at, write_artifact

X = np.random.default_rng(0).uniform([0.5, 1, 1, 0.5, 10, 1, 33, -124], [15, 52, 10, 2, 5000, 6, 42, -114], (50, 8))


def fitted(scale: float = 0.1) -> Any:
    return LinearRegression().fit(X, X[:, 0] * scale)


def test_without_the_data_training_says_where_it_looked_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "nope"))
    with pytest.raises(TrainingDataMissing, match=r"SCIKIT_LEARN_DATA=.*nope.*--download"):
        load_dataset(download=False)


def test_the_data_checksum_is_of_the_values_whatever_their_type() -> None:
    y = np.arange(3)
    assert data_sha256(np.ones((3, 8), dtype=np.int64), y) == data_sha256(np.ones((3, 8)), y.astype(np.float64))
    assert data_sha256(np.ones((3, 8)), y) != data_sha256(np.ones((3, 8)), y + 1)


def test_the_estimator_is_named_by_its_class_or_its_steps() -> None:
    assert describe(LinearRegression()) == "LinearRegression"
    assert describe(build_estimator({"max_iter": 5})) == "Pipeline(FunctionTransformer, HistGradientBoostingRegressor)"


def test_an_artifact_records_its_files_and_the_service_loads_it(tmp_path: Path) -> None:
    out = tmp_path / "m" / "model.joblib"
    meta = write_artifact(fitted(), out, {"holdout_r2": 0.5})
    assert json.loads(out.with_suffix(".json").read_text()) == meta
    assert (meta["estimator"], meta["features"], meta["holdout_r2"]) == ("LinearRegression", list(FEATURES), 0.5)
    model = load_model(out)
    assert model.version == meta["version"]
    assert np.allclose(model.predict(X[:3]), X[:3, 0] * 0.1)


def test_writing_the_same_model_again_keeps_its_version_and_another_gets_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each write a day later: only a kept created_at can keep the version.
    days = iter(range(1, 10))
    monkeypatch.setattr(time, "gmtime", lambda: time.struct_time((2026, 1, next(days), 0, 0, 0, 0, 1, 0)))
    out = tmp_path / "model.joblib"
    first = write_artifact(fitted(), out, {})
    assert write_artifact(fitted(), out, {}) == first
    assert write_artifact(fitted(0.2), out, {})["version"] != first["version"]


def test_an_unreadable_or_other_model_json_gives_no_created_at(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    assert previous_created_at(path, {}) is None
    path.write_text("[]")
    assert previous_created_at(path, {}) is None
    path.write_text(json.dumps({"version": "v", "created_at": "2026-01-01T00:00:00Z", "a": 1}))
    assert previous_created_at(path, {"a": 1}) == "2026-01-01T00:00:00Z"
    assert previous_created_at(path, {"a": 2}) is None
