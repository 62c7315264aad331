"""Loading the model artifact (checksum first) and predicting a matrix of rows.

joblib files are pickles: unpickling runs code. So the artifact's bytes are read once, hashed,
compared with the sha256 model.json records for them, and only those verified bytes are unpickled.

One chain of trust runs from the version to the bytes served (docs/model.md, "The version"):
model.json records the sha256 of every file the service loads (`joblib_sha256`, `forest_sha256`),
and the model's version is the sha256 of model.json's own content (all of it but `version`, in a
canonical form). So the version, which names every cache key and which the MLflow registry records
for a registered version (registry.py), covers the forest file, the joblib and every field of
model.json: change any of them and the version changes, or the load is refused.

When model.json also vouches for a forest file (model.forest.npz: the compiled fast path's tables as
plain arrays, see fastpath.save_forest), the service predicts from its verified bytes and neither
unpickles the artifact nor imports scikit-learn, which are most of its start-up time and memory.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from housing_api import FEATURES
from housing_api.errors import (
    IncompatibleModel,
    ModelArtifactMismatch,
    ModelArtifactMissing,
)
from housing_api.fastpath import READABLE_FORMATS, Predict, compile_predictor, load_predictor

Matrix = np.ndarray[Any, np.dtype[np.float64]]

log = logging.getLogger(__name__)


class Regressor(Protocol):
    """What the service needs of an estimator."""

    def predict(self, X: Matrix) -> Matrix: ...


def metadata_path(model_path: Path) -> Path:
    """model.json sits beside model.joblib."""
    return model_path.with_suffix(".json")


def forest_path(model_path: Path) -> Path:
    """model.forest.npz sits beside model.joblib."""
    return model_path.with_suffix(".forest.npz")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_digest(meta: Mapping[str, Any]) -> str:
    """The model's version: the sha256 of model.json's content without `version`, as canonical JSON
    (sorted keys, no whitespace), so it does not depend on how the file was formatted."""
    content = {k: v for k, v in meta.items() if k != "version"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return sha256_hex(canonical.encode())


PROVENANCE = "registry.json"
"""Written by the fetch beside a registered version's files (registry.py): which version they are,
and the model version the registry recorded for it."""
RECORDED = "model_version"
"""The field of registry.json (and of ModelInfo.registry) holding the registry's recorded version."""


@dataclass(frozen=True)
class ModelInfo:
    """The metadata in model.json."""

    version: str
    """The sha256 of model.json's content (manifest_digest), which records every loaded file's sha256."""
    joblib_sha256: str
    sklearn_version: str
    features: tuple[str, ...]
    raw: dict[str, Any]
    estimator: str = "unknown"
    forest_sha256: str | None = None
    forest_format: int | None = None
    registry: Mapping[str, str] | None = None
    """The MLflow registry version the files were fetched from; None for a local path."""


# Where MODEL_PATH points by default, and where `housing-api train` writes without --out.
DEFAULT_MODEL_PATH = Path("model/model.joblib")


def how_to_get_a_model(model_path: Path) -> str:
    """The one fix for a model_path with nothing usable there (what a newcomer most likely meant)."""
    if model_path == DEFAULT_MODEL_PATH:
        return "restore the committed model (git checkout model/) or retrain it with `housing-api train`"
    committed = f"unset MODEL_PATH to use the committed {DEFAULT_MODEL_PATH}" if DEFAULT_MODEL_PATH.is_file() else ""
    train = f"write one there with `housing-api train --out {model_path}`"
    return f"{committed}, or {train}" if committed else train


def check_model_path(model_path: Path) -> None:
    """MODEL_PATH names the .joblib artifact itself, not its folder or its model.json."""
    if model_path.is_dir():
        found = sorted(model_path.glob("*.joblib"))
        artifact = found[0] if found else model_path / DEFAULT_MODEL_PATH.name
        raise ModelArtifactMissing(
            f"MODEL_PATH={model_path} is a folder; name the artifact in it: MODEL_PATH={artifact}"
        )
    if model_path.suffix == ".json":
        raise ModelArtifactMissing(
            f"MODEL_PATH={model_path} names the metadata; name the artifact beside it: "
            f"MODEL_PATH={model_path.with_suffix('.joblib')}"
        )


def read_metadata(model_path: Path, registry: Mapping[str, str] | None = None) -> ModelInfo:
    """model.json, only if its content hashes to its version (and, for a registered version, to the
    version the registry recorded), and the folder of a registered version holds nothing else."""
    check_model_path(model_path)
    meta_file = metadata_path(model_path)
    if not meta_file.is_file():
        raise ModelArtifactMissing(
            f"no model at MODEL_PATH={model_path} ({meta_file} not found); {how_to_get_a_model(model_path)}"
        )
    raw = parse_metadata(meta_file)
    version = check_version(meta_file, raw, registry)
    if registry is not None:
        check_only_expected_files(model_path, raw)
    return ModelInfo(
        version=version,
        joblib_sha256=str(raw["joblib_sha256"]),
        sklearn_version=str(raw["sklearn_version"]),
        features=tuple(raw["features"]),
        raw=raw,
        estimator=str(raw.get("estimator", "unknown")),
        forest_sha256=raw.get("forest_sha256"),
        forest_format=raw.get("forest_format"),
        registry=registry,
    )


def parse_metadata(meta_file: Path) -> dict[str, Any]:
    """model.json's object; anything else (unreadable, not an object) is a refusal, not a traceback."""
    try:
        raw = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelArtifactMismatch(f"{meta_file} is not valid JSON ({exc}); refusing to start") from exc
    if not isinstance(raw, dict):
        raise ModelArtifactMismatch(f"{meta_file} is not a JSON object; refusing to start")
    return raw


def check_version(meta_file: Path, raw: Mapping[str, Any], registry: Mapping[str, str] | None) -> str:
    """The version model.json's content hashes to, if it is the one it claims and the one the registry
    recorded. A model.json without joblib_sha256 predates this scheme (its version was the joblib's
    sha256 alone, which did not cover the forest file)."""
    pinned = f"models:/{registry.get('name')}/{registry.get('version')}" if registry else ""
    where = f"{registry.get('uri', pinned)} ({meta_file})" if registry else str(meta_file)
    if "joblib_sha256" not in raw:
        fix = (
            f"re-register it: housing-api reregister {pinned}"
            if registry
            else "retrain it with `housing-api train` (make train TRAIN_OUT=...)"
        )
        raise ModelArtifactMismatch(
            f"{where}: model.json has no joblib_sha256, so its version does not cover every file served "
            f"(written before housing-api 0.2); refusing to start. {fix[0].upper()}{fix[1:]}"
        )
    version = manifest_digest(raw)
    if raw.get("version") != version:
        raise ModelArtifactMismatch(
            f"{where}: model.json's content hashes to {version} but it names version {raw.get('version')} "
            "(rewritten); refusing to start. Restore the files (git checkout model/, or fetch the registered "
            "version again) or retrain with `housing-api train`"
        )
    if registry is not None and registry.get(RECORDED) != version:
        raise ModelArtifactMismatch(
            f"{where}: the files hold version {version} but the registry recorded {registry.get(RECORDED)}; "
            "refusing to start. Delete the fetched folder and fetch it again (housing-api fetch-model)"
        )
    return version


def expected_files(model_path: Path, raw: Mapping[str, Any]) -> set[str]:
    """The files a fetched version's folder holds: the artifact's and registry.json."""
    names = {model_path.name, metadata_path(model_path).name, PROVENANCE}
    return names | ({forest_path(model_path).name} if raw.get("forest_sha256") is not None else set())


def check_only_expected_files(model_path: Path, raw: Mapping[str, Any]) -> None:
    """A registered version's folder holds exactly its files: anything else came from somewhere
    nothing vouches for (a forest file model.json does not name included)."""
    folder = model_path.parent
    unexpected = sorted(p.name for p in folder.iterdir() if p.name not in expected_files(model_path, raw))
    if unexpected:
        raise ModelArtifactMismatch(
            f"{folder} holds {', '.join(unexpected)}, which nothing in model.json vouches for; refusing to start. "
            "Delete the folder and fetch the registered version again (housing-api fetch-model)"
        )


def read_verified_bytes(model_path: Path, info: ModelInfo) -> bytes:
    """The artifact's bytes, only if their sha256 is the joblib_sha256 model.json records."""
    if not model_path.is_file():
        raise ModelArtifactMissing(f"model artifact {model_path} not found; {how_to_get_a_model(model_path)}")
    return read_checked(
        model_path, info.joblib_sha256, f"model artifact {model_path}", "refusing to unpickle it", model_path
    )


def read_verified_forest(model_path: Path, info: ModelInfo) -> bytes | None:
    """The forest file's bytes, only if their sha256 is the one model.json records; None when
    model.json names no forest file or the file is missing (the artifact is unpickled instead).

    A forest file that is there but differs is refused, never skipped: it means the model
    directory was tampered with or mixed up, and the joblib beside it is no more trustworthy.
    """
    path = forest_path(model_path)
    if info.forest_sha256 is None or not path.is_file():
        return None
    return read_checked(path, info.forest_sha256, f"forest file {path}", "refusing to start", model_path)


def read_checked(path: Path, expected: str, what: str, refusal: str, model_path: Path) -> bytes:
    """The file's bytes, only if their sha256 is `expected`, as model.json records it."""
    data = path.read_bytes()
    actual = sha256_hex(data)
    if actual != expected:
        raise ModelArtifactMismatch(
            f"{what} has sha256 {actual} but {metadata_path(model_path).name} expects {expected}; {refusal}. "
            "Restore the committed files (git checkout model/) or retrain with `housing-api train`"
        )
    return data


def installed_sklearn_version() -> str:
    # From the package metadata: importing scikit-learn takes seconds, and the forest file
    # does not need it at all.
    try:
        return importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def check_compatible(info: ModelInfo) -> None:
    installed = installed_sklearn_version()
    # Without scikit-learn (the runtime image, no `train` extra) nothing is unpickled, so its version
    # does not matter: require_fast_path() insists on the forest file instead.
    if installed != "none" and info.sklearn_version != installed:
        raise IncompatibleModel(
            f"model was written by scikit-learn {info.sklearn_version} but "
            f"{installed} is installed; install scikit-learn=={info.sklearn_version} "
            "(make install) or retrain with `housing-api train`"
        )
    if info.features != FEATURES:
        raise IncompatibleModel(
            f"model features {list(info.features)} differ from the service's {list(FEATURES)}; "
            "retrain with `housing-api train`"
        )
    if info.forest_sha256 is not None and info.forest_format not in READABLE_FORMATS:
        raise IncompatibleModel(
            f"model's forest file has format {info.forest_format} but this service reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}; retrain with `housing-api train`"
        )


class Model:
    """A verified, loaded model: predict() takes an (n, 8) float64 matrix in FEATURES order."""

    def __init__(
        self, info: ModelInfo, predict: Predict, *, fast_path: bool, load_estimator: Callable[[], Regressor]
    ) -> None:
        self.info = info
        self.version = info.version
        self._predict = predict
        self.fast_path = fast_path
        """True when predict() runs the compiled fast path instead of estimator.predict."""
        self._load_estimator = load_estimator

    @classmethod
    def from_estimator(cls, estimator: Regressor, info: ModelInfo) -> Model:
        # scikit-learn's predict costs ~5 ms a call even for one row; the compiled path gives the
        # same numbers in microseconds, and estimators it does not cover keep their own predict.
        fast = compile_predictor(estimator)
        return cls(info, fast or estimator.predict, fast_path=fast is not None, load_estimator=lambda: estimator)

    @cached_property
    def estimator(self) -> Regressor:
        """The scikit-learn estimator. Serving never needs it when the fast path is loaded from the
        forest file, so it is unpickled (importing scikit-learn) on first use only."""
        return self._load_estimator()

    def predict(self, X: Matrix) -> Matrix:
        return np.asarray(self._predict(X), dtype=np.float64)


def unpickle(data: bytes) -> Regressor:
    """Unpickle bytes whose sha256 was checked. joblib is imported here, not at start-up."""
    import joblib

    estimator: Regressor = joblib.load(io.BytesIO(data))
    return estimator


def forest_predictor(model_path: Path, forest: bytes) -> Predict | None:
    """predict() from verified forest bytes; None without the compiled kernel."""
    try:
        predict = load_predictor(forest)
        if predict is not None:
            # The kernel checks every table's size on each call: let a bad table fail start-up
            # rather than the first request.
            predict(np.zeros((1, len(FEATURES))))
    except (ValueError, zipfile.BadZipFile) as exc:
        raise IncompatibleModel(
            f"forest file {forest_path(model_path)} cannot be used: {exc}; retrain with `housing-api train`"
        ) from exc
    return predict


def require_fast_path(model_path: Path, info: ModelInfo, forest: bytes | None) -> Predict:
    """Without scikit-learn only the compiled fast path can serve: its predict(), or a one-line refusal."""
    predict = None if forest is None else forest_predictor(model_path, forest)
    if predict is None:
        why = (
            "model.json names no forest file"
            if info.forest_sha256 is None
            else f"{forest_path(model_path).name} is missing"
            if forest is None
            else "the compiled kernel is not built"
        )
        raise IncompatibleModel(
            f"model {model_path} ({info.estimator}) cannot be served without scikit-learn ({why}), and this "
            "installation has none; serve a model with a forest file (`housing-api train` writes one) or "
            "install the `train` extra (pip install 'housing-api[train]')"
        )
    return predict


def load_model(model_path: Path, registry: Mapping[str, str] | None = None) -> Model:
    """Verify then load; raises a ModelArtifactError subclass with a one-line fix otherwise."""
    info = read_metadata(model_path, registry)
    check_compatible(info)
    data = read_verified_bytes(model_path, info)
    forest = read_verified_forest(model_path, info)
    if installed_sklearn_version() == "none":
        predict: Predict | None = require_fast_path(model_path, info, forest)
    else:
        predict = None if forest is None else forest_predictor(model_path, forest)
    if predict is not None:
        # The verified joblib bytes are unpickled only if someone asks for the estimator.
        return Model(info, predict, fast_path=True, load_estimator=partial(unpickle, data))
    if info.forest_sha256 is not None:
        log.warning("forest file %s missing or no compiled kernel: unpickling the model", forest_path(model_path))
    # Unpickle the bytes we hashed, not the file again: the file could change in between.
    return Model.from_estimator(unpickle(data), info)


def verify_files(model_path: Path, registry: Mapping[str, str] | None = None) -> ModelInfo:
    """The chain of trust alone: model.json hashes to its version (and the registry's), and every
    file it names has the sha256 it records. What a fetch checks before it keeps a folder."""
    info = read_metadata(model_path, registry)
    read_verified_bytes(model_path, info)
    read_verified_forest(model_path, info)
    return info


def verify_artifact(model_path: Path, registry: Mapping[str, str] | None = None) -> ModelInfo:
    """Every check load_model() makes before unpickling, without unpickling (without scikit-learn,
    also that the forest file's tables load, since nothing else could serve)."""
    info = read_metadata(model_path, registry)
    check_compatible(info)
    read_verified_bytes(model_path, info)
    forest = read_verified_forest(model_path, info)
    if installed_sklearn_version() == "none":
        require_fast_path(model_path, info, forest)
    return info
