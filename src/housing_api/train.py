"""`housing-api train`: fit the regressor on the California housing data and write the artifact.

The data comes through scikit-learn's real loader, which honours SCIKIT_LEARN_DATA (an offline copy
works; see the README). The split and the estimator are seeded, so a re-run reproduces the metrics.

The estimator is a Pipeline: coordinates.append_derived in a FunctionTransformer (linear combinations
of Latitude and Longitude appended as columns; docs/model.md), then the regressor, so model.joblib's
predict takes the 8 raw features like the service does.

Beside model.joblib it writes model.forest.npz, the fast path's tables as plain arrays, so the service
can start without scikit-learn; model.json records the sha256 of both, and the version is the digest
of model.json's content (model.py). A re-run that produces the same model leaves model.json's
created_at alone, so the tree stays clean and the version the same.

`housing-api train --register` also logs the run to MLflow and registers a new version (registry.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.datasets import fetch_california_housing
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from housing_api import FEATURES
from housing_api.coordinates import PAIRS, append_derived, derived_names
from housing_api.errors import IncompatibleModel, TrainingDataMissing
from housing_api.fastpath import FOREST_FORMAT, export_forest, save_forest
from housing_api.model import forest_path, load_model, manifest_digest, metadata_path, sha256_hex, unpickle
from housing_api.registry import Registered, Registry, parse_ref

SEED = 42
TEST_SIZE = 0.2
# On the seeded split (docs/model.md): with the derived coordinate columns, 400 trees at the
# default learning rate beat every tuning of 3000 trees on the raw features. All features at every
# split (max_features=1.0), so the fit does not depend on the seed. max_leaf_nodes stays at 31, the
# most the compiled fast path's 32-bit leaf masks cover.
PARAMS: dict[str, Any] = {
    "max_iter": 400,
    "learning_rate": 0.1,
    "max_leaf_nodes": 31,
    "l2_regularization": 0.0,
    "max_features": 1.0,
    "early_stopping": False,
    "random_state": SEED,
}


@dataclass(frozen=True)
class TrainResult:
    r2: float
    mae: float
    meta: dict[str, Any]


DATA_FILE = "cal_housing_py3.pkz"
"""scikit-learn's cache of the data in its data folder (SCIKIT_LEARN_DATA)."""


def data_home() -> Path:
    """scikit-learn's data folder, as get_data_home() finds it, without creating it as that does."""
    return Path(os.environ.get("SCIKIT_LEARN_DATA", "~/scikit_learn_data")).expanduser()


def load_dataset(download: bool) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    if not download and not (data_home() / DATA_FILE).is_file():
        # scikit-learn would raise an OSError deep in a traceback; say what to do instead.
        raise TrainingDataMissing(
            f"the California housing data is not in SCIKIT_LEARN_DATA={data_home()} (no {DATA_FILE} there); "
            "set SCIKIT_LEARN_DATA to the offline copy (../shared/data/sklearn beside this repo; `make train` "
            "does) or pass --download to let scikit-learn download it"
        )
    data = fetch_california_housing(download_if_missing=download)
    if tuple(data.feature_names) != FEATURES:
        raise RuntimeError(f"unexpected feature order {data.feature_names}")
    return np.asarray(data.data, dtype=np.float64), np.asarray(data.target, dtype=np.float64)


def data_sha256(X: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> str:
    """The training data's checksum: of the float64 values themselves, whichever file they came from."""
    digest = hashlib.sha256(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    return digest.hexdigest()


def build_estimator(params: dict[str, Any]) -> Pipeline:
    """The derived coordinate columns (the pairs recorded in the pickle, not looked up at predict
    time), then the regressor."""
    coordinates = FunctionTransformer(append_derived, kw_args={"pairs": PAIRS})
    return Pipeline([("coordinates", coordinates), ("regressor", HistGradientBoostingRegressor(**params))])


def describe(estimator: object) -> str:
    """model.json's estimator (also a metrics label): the class, and a Pipeline's steps' classes."""
    if isinstance(estimator, Pipeline):
        return f"Pipeline({', '.join(type(step).__name__ for _, step in estimator.steps)})"
    return type(estimator).__name__


def train(out: Path, download: bool = False, max_iter: int | None = None) -> TrainResult:
    """Fit, evaluate on the seeded 20% hold-out, write model.joblib and model.json.
    max_iter overrides PARAMS' (fewer trees: a quick model for tests and experiments)."""
    X, y = load_dataset(download)
    params = PARAMS if max_iter is None else {**PARAMS, "max_iter": max_iter}
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=TEST_SIZE, random_state=SEED)
    est = build_estimator(params).fit(X_tr, y_tr)
    pred = est.predict(X_te)
    r2, mae = float(r2_score(y_te, pred)), float(mean_absolute_error(y_te, pred))
    meta = write_artifact(
        est,
        out,
        {
            "estimator": describe(est),
            "params": params,
            "derived_features": derived_names(PAIRS),
            "target": "MedHouseVal (units of $100,000)",
            "holdout_r2": round(r2, 6),
            "holdout_mae": round(mae, 6),
            "train_rows": len(y_tr),
            "test_rows": len(y_te),
            "split": {"test_size": TEST_SIZE, "random_state": SEED},
            "data_sha256": data_sha256(X, y),
        },
    )
    check_served_predictions(out, X_te, pred)
    return TrainResult(r2, mae, meta)


def check_served_predictions(out: Path, X: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> None:
    """What the service loads from the files just written (the forest file when there is one)
    must give scikit-learn's numbers: better to fail here than to serve different ones."""
    served = load_model(out).predict(X)
    worst = float(np.max(np.abs(served - expected), initial=0.0))
    if worst > 1e-9:
        raise RuntimeError(f"the model loaded from {out} differs from scikit-learn's predict by {worst}")


def write_artifact(estimator: object, out: Path, details: dict[str, Any]) -> dict[str, Any]:
    """Write model.joblib, the forest file when the fast path covers the estimator, and the
    model.json that vouches for them (model.py: version = the digest of model.json's content)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, out)
    return write_metadata(out, estimator, details)


def write_metadata(out: Path, estimator: object, details: dict[str, Any]) -> dict[str, Any]:
    """The forest file from estimator, then model.json for it and the joblib already at out."""
    meta = {
        "joblib_sha256": sha256_hex(out.read_bytes()),
        **write_forest(estimator, forest_path(out)),
        "sklearn_version": sklearn.__version__,
        "estimator": describe(estimator),
        "features": list(FEATURES),
        **details,
    }
    meta["created_at"] = previous_created_at(metadata_path(out), meta) or time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()
    )
    # The version covers created_at too; a re-run of the same model keeps it, so keeps the version.
    meta = {"version": manifest_digest(meta), **meta}
    metadata_path(out).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def previous_created_at(path: Path, meta: dict[str, Any]) -> str | None:
    """The created_at of the model.json already at path when it describes this very model (same
    files, same details): a re-run that changes nothing then rewrites identical bytes."""
    try:
        previous = json.loads(path.read_text())
        created = previous.pop("created_at")
        previous.pop("version", None)
    except (OSError, ValueError, KeyError, AttributeError, TypeError):  # TypeError: a JSON array
        return None
    return str(created) if previous == meta else None


def register(registry: Registry, out: Path, result: TrainResult, name: str) -> Registered:
    """Log this training run to MLflow (params, held-out R2 and MAE, the data's checksum, the
    files) and register it as a new version of the registered model `name`."""
    meta = result.meta
    files = {"model.joblib": out, "model.json": metadata_path(out)}
    if "forest_sha256" in meta:
        files["model.forest.npz"] = forest_path(out)
    params = {
        **meta["params"],
        "derived_features": meta.get("derived_features", []),
        "test_size": TEST_SIZE,
        "split_random_state": SEED,
        "data_sha256": meta["data_sha256"],
    }
    return registry.register(
        files,
        name=name,
        model_version=meta["version"],
        params=params,
        metrics={"holdout_r2": result.r2, "holdout_mae": result.mae},
    )


MIGRATED_FROM_TAG = "housing_api.reregistered_from"
"""Tag of a version `housing-api reregister` made: the version whose joblib it carries."""
REBUILT = ("version", "joblib_sha256", "forest_sha256", "forest_format", "estimator", "features", "created_at")
"""model.json's fields a re-registration recomputes from the verified joblib rather than copies."""


def reregister(registry: Registry, pinned: str, workdir: Path) -> Registered:
    """Register a version registered before housing-api 0.2 again, under the current scheme: its
    joblib, verified against the registry's old tag; a forest file and model.json rebuilt from that
    joblib (the old ones were vouched for by nothing); its run's params and metrics."""
    joblib_file, params, metrics = registry.fetch_legacy(pinned, workdir / "fetched")
    old = json.loads(joblib_file.with_name("model.json").read_text())
    if old.get("sklearn_version") != sklearn.__version__:
        raise IncompatibleModel(
            f"{pinned} was written by scikit-learn {old.get('sklearn_version')} but {sklearn.__version__} is "
            f"installed; re-register it with scikit-learn=={old.get('sklearn_version')}, or retrain"
        )
    out = workdir / "model" / "model.joblib"
    out.parent.mkdir(parents=True)
    out.write_bytes(joblib_file.read_bytes())
    estimator = unpickle(out.read_bytes())  # the bytes just checked against the registry's tag
    meta = write_metadata(out, estimator, {k: v for k, v in old.items() if k not in REBUILT})
    X = np.random.default_rng(0).uniform(PLAUSIBLE_LOW, PLAUSIBLE_HIGH, size=(2000, len(FEATURES)))
    check_served_predictions(out, X, np.asarray(estimator.predict(X), dtype=np.float64))
    files = {"model.joblib": out, "model.json": metadata_path(out)}
    if forest_path(out).is_file():
        files["model.forest.npz"] = forest_path(out)
    name = parse_ref(pinned).name
    return registry.register(files, name=name, model_version=meta["version"], params=params, metrics=metrics,
                             tags={MIGRATED_FROM_TAG: pinned})  # fmt: skip


PLAUSIBLE_LOW = (0.5, 1, 1, 0.5, 10, 1, 33, -124)
PLAUSIBLE_HIGH = (15, 52, 10, 2, 5000, 6, 42, -114)
"""A box around the California data: where a re-registered model's two paths are compared."""


def write_forest(estimator: object, path: Path) -> dict[str, Any]:
    """Write the fast path's tables to path; returns model.json's forest fields, none when the
    fast path does not cover the estimator (the service then unpickles model.joblib)."""
    exported = export_forest(estimator)
    if exported is None:
        # A forest file left by an earlier model would sit beside a model.json that ignores it.
        path.unlink(missing_ok=True)
        return {}
    with path.open("wb") as file:
        save_forest(*exported, file)
    return {"forest_sha256": sha256_hex(path.read_bytes()), "forest_format": FOREST_FORMAT}
