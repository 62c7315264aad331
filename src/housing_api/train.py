"""`housing-api train`: fit the regressor on the California housing data and write the artifact.

The data comes through scikit-learn's real loader, which honours SCIKIT_LEARN_DATA (an offline copy
works; see the README). The split and the estimator are seeded, so a re-run reproduces the metrics.
"""

from __future__ import annotations

import json
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

from housing_api import FEATURES
from housing_api.model import metadata_path, sha256_hex

SEED = 42
TEST_SIZE = 0.2
PARAMS: dict[str, Any] = {
    "max_iter": 400,
    "learning_rate": 0.1,
    "max_leaf_nodes": 31,
    "l2_regularization": 1.0,
    "early_stopping": False,
    "random_state": SEED,
}


@dataclass(frozen=True)
class TrainResult:
    r2: float
    mae: float
    meta: dict[str, Any]


def load_dataset(download: bool) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    data = fetch_california_housing(download_if_missing=download)
    if tuple(data.feature_names) != FEATURES:
        raise RuntimeError(f"unexpected feature order {data.feature_names}")
    return np.asarray(data.data, dtype=np.float64), np.asarray(data.target, dtype=np.float64)


def train(out: Path, download: bool = False) -> TrainResult:
    """Fit, evaluate on the seeded 20% hold-out, write model.joblib and model.json."""
    X, y = load_dataset(download)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=TEST_SIZE, random_state=SEED)
    est = HistGradientBoostingRegressor(**PARAMS).fit(X_tr, y_tr)
    pred = est.predict(X_te)
    r2, mae = float(r2_score(y_te, pred)), float(mean_absolute_error(y_te, pred))
    meta = write_artifact(
        est,
        out,
        {
            "estimator": type(est).__name__,
            "params": PARAMS,
            "target": "MedHouseVal (units of $100,000)",
            "holdout_r2": round(r2, 6),
            "holdout_mae": round(mae, 6),
            "train_rows": len(y_tr),
            "test_rows": len(y_te),
            "split": {"test_size": TEST_SIZE, "random_state": SEED},
        },
    )
    return TrainResult(r2, mae, meta)


def write_artifact(estimator: object, out: Path, details: dict[str, Any]) -> dict[str, Any]:
    """Write model.joblib and the model.json that vouches for it (version = sha256 of the bytes)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, out)
    meta = {
        "version": sha256_hex(out.read_bytes()),
        "sklearn_version": sklearn.__version__,
        "features": list(FEATURES),
        **details,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    metadata_path(out).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
