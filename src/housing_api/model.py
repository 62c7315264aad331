"""Loading the model artifact (checksum first) and predicting a matrix of rows.

joblib files are pickles: unpickling runs code. So the artifact's bytes are read once, hashed,
compared with the version recorded in model.json, and only those verified bytes are unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import joblib
import numpy as np
import sklearn

from housing_api import FEATURES
from housing_api.errors import (
    IncompatibleModel,
    ModelArtifactMismatch,
    ModelArtifactMissing,
)
from housing_api.fastpath import compile_predictor

Matrix = np.ndarray[Any, np.dtype[np.float64]]


class Regressor(Protocol):
    """What the service needs of an estimator."""

    def predict(self, X: Matrix) -> Matrix: ...


def metadata_path(model_path: Path) -> Path:
    """model.json sits beside model.joblib."""
    return model_path.with_suffix(".json")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """The metadata in model.json."""

    version: str
    sklearn_version: str
    features: tuple[str, ...]
    raw: dict[str, Any]


def read_metadata(model_path: Path) -> ModelInfo:
    meta_file = metadata_path(model_path)
    if not meta_file.is_file():
        raise ModelArtifactMissing(
            f"model metadata {meta_file} not found; run `housing-api train` to create "
            f"{model_path} and {meta_file}, or set MODEL_PATH"
        )
    raw = json.loads(meta_file.read_text())
    return ModelInfo(
        version=str(raw["version"]),
        sklearn_version=str(raw["sklearn_version"]),
        features=tuple(raw["features"]),
        raw=raw,
    )


def read_verified_bytes(model_path: Path, info: ModelInfo) -> bytes:
    """The artifact's bytes, only if their sha256 is the version model.json records."""
    if not model_path.is_file():
        raise ModelArtifactMissing(f"model artifact {model_path} not found; run `housing-api train` or set MODEL_PATH")
    data = model_path.read_bytes()
    actual = sha256_hex(data)
    if actual != info.version:
        raise ModelArtifactMismatch(
            f"model artifact {model_path} has sha256 {actual} but {metadata_path(model_path).name} "
            f"expects {info.version}; refusing to unpickle it. Restore the committed artifact "
            "(git checkout model/) or retrain with `housing-api train`"
        )
    return data


def check_compatible(info: ModelInfo) -> None:
    if info.sklearn_version != sklearn.__version__:
        raise IncompatibleModel(
            f"model was written by scikit-learn {info.sklearn_version} but "
            f"{sklearn.__version__} is installed; install scikit-learn=={info.sklearn_version} "
            "(make install) or retrain with `housing-api train`"
        )
    if info.features != FEATURES:
        raise IncompatibleModel(
            f"model features {list(info.features)} differ from the service's {list(FEATURES)}; "
            "retrain with `housing-api train`"
        )


class Model:
    """A verified, loaded model: predict() takes an (n, 8) float64 matrix in FEATURES order."""

    def __init__(self, estimator: Regressor, info: ModelInfo) -> None:
        self.estimator = estimator
        self.info = info
        self.version = info.version
        # scikit-learn's predict costs ~5 ms a call even for one row; the compiled path gives the
        # same numbers in microseconds, and estimators it does not cover keep their own predict.
        fast = compile_predictor(estimator)
        self._predict = fast or estimator.predict
        self.fast_path: bool = fast is not None
        """True when predict() runs the compiled fast path instead of estimator.predict."""

    def predict(self, X: Matrix) -> Matrix:
        return np.asarray(self._predict(X), dtype=np.float64)


def load_model(model_path: Path) -> Model:
    """Verify then load; raises a ModelArtifactError subclass with a one-line fix otherwise."""
    info = read_metadata(model_path)
    check_compatible(info)
    data = read_verified_bytes(model_path, info)
    # Unpickle the bytes we hashed, not the file again: the file could change in between.
    estimator = joblib.load(io.BytesIO(data))
    return Model(estimator, info)


def verify_artifact(model_path: Path) -> ModelInfo:
    """Every check load_model() makes before unpickling, without unpickling."""
    info = read_metadata(model_path)
    check_compatible(info)
    read_verified_bytes(model_path, info)
    return info
