"""Models from an MLflow model registry: register a trained model, fetch a registered version.

MODEL_URI names a registered version the way MLflow does: `models:/<name>/<version>` (immutable:
what prod pins) or `models:/<name>@<alias>` (moves: for dev). fetch() resolves it to one version,
downloads that version's files (model.joblib, model.forest.npz, model.json) once into
MODEL_STORE/<name>/<version>/, and load_model() then verifies them exactly as it verifies the
committed model: sha256 before anything is unpickled or read.

The registry vouches for the files too: register() records the model's version (the sha256 of
model.joblib) as a tag of the registered version, and fetch() refuses files whose model.json names
another. So bytes changed in the artifact store stop start-up even when model.json was rewritten to
match them.

MLflow's client is imported here only, and only when MODEL_URI is a registry reference: it comes
with the `mlflow` extra. A process without it (the runtime image) serves what `housing-api
fetch-model` (the Kubernetes init container) fetched for the same MODEL_URI; see docs/deployment.md.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from housing_api.errors import (
    InvalidModelUri,
    ModelArtifactMismatch,
    ModelArtifactMissing,
    ModelVersionNotFound,
    RegistryUnavailable,
)

SCHEME = "models:/"
SHA256_TAG = "housing_api.sha256"
"""Tag of a registered version: the sha256 of its model.joblib, i.e. model.json's version."""
ARTIFACT_DIR = "model"
"""Folder of the run's artifacts that a registered version points at."""
REQUIRED = ("model.joblib", "model.json")
"""What a registered version must hold; model.forest.npz is optional, as beside the committed model."""
PROVENANCE = "registry.json"
"""Written beside the fetched files: which registered version they are."""
CURRENT = "current.json"
"""Written in MODEL_STORE by every fetch: which version MODEL_URI resolved to, for a process
without MLflow's client (the runtime container after the init container fetched)."""
INSTALL_HINT = "install MLflow's client with: pip install 'housing-api[mlflow]' (make install does)"

# Start-up must fail in seconds, not after MLflow's default of 7 retries with exponential backoff;
# the kubelet restarts a failed init container with its own backoff. Both can be overridden.
CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}  # fmt: skip

_REF = re.compile(
    r"models:/(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*)(?:/(?P<version>[1-9][0-9]*)|@(?P<alias>[A-Za-z0-9_\-]+))"
)

_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+|timed out|Read timed out")


@dataclass(frozen=True)
class RegistryRef:
    """A parsed MODEL_URI: a registered model's name and either a version or an alias."""

    name: str
    version: str | None = None
    alias: str | None = None

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.name}/{self.version}" if self.version else f"{SCHEME}{self.name}@{self.alias}"


@dataclass(frozen=True)
class ModelSource:
    """Where the service loads its model from; `registry` names the registered version, if any."""

    path: Path
    registry: Mapping[str, str] | None = field(default=None)


def is_registry_uri(uri: str) -> bool:
    return uri.startswith(SCHEME)


def parse_ref(uri: str) -> RegistryRef:
    match = _REF.fullmatch(uri)
    if match is None:
        raise InvalidModelUri(
            f"MODEL_URI {uri!r} is neither a local path nor models:/<name>/<version> or models:/<name>@<alias>"
        )
    return RegistryRef(match["name"], match["version"], match["alias"])


def redact(uri: str) -> str:
    """The tracking URI without user:password, fit for a log line or /model."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def one_line(exc: BaseException, limit: int = 240) -> str:
    """MLflow's messages span lines and quote whole responses: keep the first line, bounded."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def resolve_source(model_uri: str | None, model_path: Path, store: Path, tracking_uri: str | None) -> ModelSource:
    """The local model.joblib to load: MODEL_URI's (fetched when it is a registry reference), else MODEL_PATH."""
    if not model_uri:
        return ModelSource(model_path)
    if not is_registry_uri(model_uri):
        return ModelSource(Path(model_uri))
    ref = parse_ref(model_uri)
    try:
        client = Registry(tracking_uri)
    except ImportError:
        return prefetched(ref, store)
    return client.fetch(ref, store)


def prefetched(ref: RegistryRef, store: Path) -> ModelSource:
    """What `housing-api fetch-model` left in the store for this very MODEL_URI (no client here)."""
    pointer = store / CURRENT
    try:
        current = json.loads(pointer.read_text())
        if current["uri"] != ref.uri:
            raise ModelArtifactMissing(
                f"{pointer} holds {current['uri']}, not MODEL_URI {ref.uri}; run `housing-api fetch-model` "
                f"for {ref.uri} first, or {INSTALL_HINT}"
            )
        folder = store / ref.name / str(current["version"])
        return ModelSource(folder / "model.joblib", read_provenance(folder, ref))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelArtifactMissing(
            f"MODEL_URI {ref.uri} needs MLflow's client or a folder fetched by `housing-api fetch-model` "
            f"in MODEL_STORE={store} ({one_line(exc, 120)}); {INSTALL_HINT}"
        ) from exc


def read_provenance(folder: Path, ref: RegistryRef) -> dict[str, str]:
    raw = json.loads((folder / PROVENANCE).read_text())
    return {**{str(k): str(v) for k, v in raw.items()}, "uri": ref.uri, **({"alias": ref.alias} if ref.alias else {})}


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write-then-rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


@dataclass(frozen=True)
class Registered:
    """A version that register() created."""

    name: str
    version: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.name}/{self.version}"


class Registry:
    """MLflow's client for one tracking server (which also holds the model registry).

    Every call translates MLflow's exceptions into ours at this boundary, with one line that
    names the server, the reference and what to do.
    """

    def __init__(self, tracking_uri: str | None) -> None:
        for name, value in CLIENT_DEFAULTS.items():
            os.environ.setdefault(name, value)
        # urllib3 logs each retry as a warning; the one line a failed start prints says it all.
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        # ImportError propagates: resolve_source() falls back to a prefetched folder.
        from mlflow.tracking import MlflowClient

        if not tracking_uri:
            raise RegistryUnavailable(
                "a models:/ reference needs MLFLOW_TRACKING_URI (the MLflow tracking server's URL)"
            )
        self.tracking_uri = tracking_uri
        self.where = redact(tracking_uri)
        # registry_uri explicitly: MLflow would otherwise fall back to a local ./mlflow.db.
        self.client = MlflowClient(tracking_uri, registry_uri=tracking_uri)

    def _failure(self, exc: Exception, what: str) -> Exception:
        from mlflow.exceptions import RestException

        if isinstance(exc, RestException):
            # The server answered: a missing name, version or alias is RESOURCE_DOES_NOT_EXIST,
            # except a missing alias, which MLflow reports as INVALID_PARAMETER_VALUE "... not found".
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower():
                return ModelVersionNotFound(
                    f"{what} does not exist in the MLflow registry at {self.where}: {one_line(exc)}"
                )
            return RegistryUnavailable(f"the MLflow registry at {self.where} refused {what}: {one_line(exc)}")
        # MLflow wraps the transport's error in a sentence that quotes the whole request: keep the cause.
        cause = _ERRNO.search(str(exc))
        reason = cause[0] if cause else one_line(exc, 160)
        return RegistryUnavailable(
            f"the MLflow registry at {self.where} is unreachable ({reason}); check MLFLOW_TRACKING_URI"
        )

    # --- serving side ----------------------------------------------------------------------------

    def fetch(self, ref: RegistryRef, store: Path) -> ModelSource:
        """Resolve ref to one version, download its files unless the store has them, check that
        they are the bytes the registry vouches for, and record what MODEL_URI resolved to."""
        from mlflow.exceptions import MlflowException

        try:
            if ref.version:
                mv = self.client.get_model_version(ref.name, ref.version)
            else:
                mv = self.client.get_model_version_by_alias(ref.name, str(ref.alias))
            folder = store / ref.name / str(mv.version)
            if not (folder / PROVENANCE).is_file():
                self._download(mv, folder)
        except MlflowException as exc:
            raise self._failure(exc, ref.uri) from exc
        self._check_vouched(folder, str(mv.tags.get(SHA256_TAG, "")), ref)
        write_json(store / CURRENT, {"uri": ref.uri, "name": ref.name, "version": str(mv.version)})
        return ModelSource(folder / "model.joblib", read_provenance(folder, ref))

    def _download(self, mv: Any, folder: Path) -> None:
        import mlflow.artifacts

        folder.parent.mkdir(parents=True, exist_ok=True)
        source = self.client.get_model_version_download_uri(mv.name, mv.version)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{mv.version}-") as tmp:
            got = Path(
                mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=self.tracking_uri)
            )
            missing = [name for name in REQUIRED if not (got / name).is_file()]
            if missing:
                raise ModelArtifactMissing(
                    f"models:/{mv.name}/{mv.version} has no {', '.join(missing)} at {source}; register models "
                    "with `housing-api train --register`"
                )
            provenance = {"name": mv.name, "version": str(mv.version), "run_id": str(mv.run_id or ""),
                          "source": source, "tracking_uri": self.where}  # fmt: skip
            write_json(got / PROVENANCE, provenance)
            try:
                # Versions are immutable, so a complete folder is reused by later starts. The rename
                # makes it appear whole; a concurrent fetch of the same version may win the race.
                got.rename(folder)
            except OSError:
                if not (folder / PROVENANCE).is_file():
                    raise

    @staticmethod
    def _check_vouched(folder: Path, expected: str, ref: RegistryRef) -> None:
        try:
            version = str(json.loads((folder / "model.json").read_text())["version"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelArtifactMissing(
                f"{ref.uri}: {folder / 'model.json'} is unreadable ({one_line(exc, 120)})"
            ) from exc
        if not expected:
            raise ModelArtifactMismatch(
                f"{ref.uri} has no {SHA256_TAG} tag, so nothing vouches for its files; register it with "
                "`housing-api train --register`"
            )
        if version != expected:
            raise ModelArtifactMismatch(
                f"{ref.uri}: model.json in the artifact store names version {version} but the registry recorded "
                f"{expected}; refusing to start. Re-register the model with `housing-api train --register`"
            )

    # --- training side ---------------------------------------------------------------------------

    def register(
        self,
        files: Mapping[str, Path],
        *,
        name: str,
        sha256: str,
        params: Mapping[str, object],
        metrics: Mapping[str, float],
        experiment: str = "housing-api",
    ) -> Registered:
        """Log a run (params, metrics, the files under `model/`) and register it as a new version of `name`."""
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException, RestException

        try:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            run = self.client.create_run(experiment_id, tags={SHA256_TAG: sha256})
            run_id = run.info.run_id
            now = int(run.info.start_time)
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                params=[Param(k, str(v)) for k, v in params.items()],
            )
            with tempfile.TemporaryDirectory() as staging:
                # The store holds the canonical names whatever --out called them.
                for canonical, path in files.items():
                    shutil.copyfile(path, Path(staging) / canonical)
                self.client.log_artifacts(run_id, staging, ARTIFACT_DIR)
            self.client.set_terminated(run_id)
            try:
                self.client.create_registered_model(name)
            except RestException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            mv = self.client.create_model_version(
                name, f"{run.info.artifact_uri}/{ARTIFACT_DIR}", run_id, tags={SHA256_TAG: sha256}
            )
        except MlflowException as exc:
            raise self._failure(exc, f"registering {name}") from exc
        return Registered(name, str(mv.version), run_id)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.set_registered_model_alias(name, alias, version)
        except MlflowException as exc:
            raise self._failure(exc, f"{SCHEME}{name}@{alias}") from exc
