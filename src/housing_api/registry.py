"""Models from an MLflow model registry: register a trained model, fetch a registered version.

MODEL_URI names a registered version the way MLflow does: `models:/<name>/<version>` (immutable:
what prod pins) or `models:/<name>@<alias>` (moves: for dev). fetch() resolves it to one version,
downloads that version's files (model.joblib, model.forest.npz, model.json) once into
MODEL_STORE/<name>/<version>/, and load_model() then verifies them exactly as it verifies the
committed model: sha256 before anything is unpickled or read.

The registry vouches for the files: register() records the model's version (model.py: the digest of
model.json's content, which records the sha256 of the joblib and the forest file) as a tag of the
registered version. fetch() refuses files whose content hashes to another version, and a folder
holding anything else; it writes the recorded version into registry.json, and load_model() checks
the files against it again. Whoever can write the artifact store (but not the registry) can
therefore not make a pod serve other bytes, however consistently they rewrite the files.

MLflow's client is imported here only, and only when MODEL_URI is a registry reference: it comes
with the `mlflow` extra. A process without it (the runtime image) serves what `housing-api
fetch-model` (the Kubernetes init container) fetched for the same MODEL_URI; see docs/deployment.md.
"""

from __future__ import annotations

import hashlib
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
from housing_api.model import PROVENANCE, RECORDED, verify_files

SCHEME = "models:/"
VERSION_TAG = "housing_api.version"
"""Tag of a registered version: its model version (model.py's manifest_digest of its model.json)."""
LEGACY_TAG = "housing_api.sha256"
"""The tag of versions registered before housing-api 0.2: the sha256 of model.joblib alone."""
ARTIFACT_DIR = "model"
"""Folder of the run's artifacts that a registered version points at."""
REQUIRED = ("model.joblib", "model.json")
"""What a registered version must hold; model.forest.npz is optional, as beside the committed model."""
ALLOWED = (*REQUIRED, "model.forest.npz")
"""Everything a registered version may hold: any other file in the artifact store is refused."""
PUBLIC = ("name", "version", "uri", "alias", "run_id", RECORDED)
"""What GET /model shows of registry.json: no artifact store location, no tracking server host
(/model is public in prod; both stay in registry.json on the pod's volume, redacted)."""
CURRENT = "current.json"
"""Written in MODEL_STORE by every fetch: which version MODEL_URI resolved to, for a process
without MLflow's client (the runtime container after the init container fetched)."""
INSTALL_HINT = "install MLflow's client with: pip install 'housing-api[mlflow]' (make install does)"

# Start-up must fail in seconds, not after MLflow's default of 7 retries with exponential backoff
# (nor boto3's 5 attempts per call to an s3:// store); the kubelet restarts a failed init container
# with its own backoff. All can be overridden.
CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "15", "AWS_MAX_ATTEMPTS": "3"}  # fmt: skip

_REF = re.compile(
    r"models:/(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*)(?:/(?P<version>[1-9][0-9]*)|@(?P<alias>[A-Za-z0-9_\-]+))"
)

_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+|timed out|Read timed out")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


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
    """A URI without user:password, query string or fragment (presigned URLs and tokens travel
    there), fit for a log line or registry.json."""
    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. an unclosed IPv6 bracket: say nothing of what follows the scheme
        return uri.split(":", 1)[0] + "://<redacted>"
    # The last @ ends the userinfo (a password may contain an unescaped @).
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment=""))


def redact_text(text: str) -> str:
    """Every URI in a message redacted: MLflow's and urllib3's messages quote the URLs they called."""
    return _URI.sub(lambda match: redact(match[0]), text)


def one_line(exc: BaseException, limit: int = 240) -> str:
    """MLflow's messages span lines and quote whole responses: keep the first line, bounded, redacted."""
    text = redact_text(" ".join(str(exc).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def store_errors() -> tuple[type[Exception], ...]:
    """The S3 client's exceptions (boto3, which MLflow uses for s3:// stores), where it is installed:
    MLflow lets them through unwrapped."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return ()
    return (BotoCoreError, ClientError)


def public_view(registry: Mapping[str, str] | None) -> dict[str, str] | None:
    """The registry block of GET /model: which version, not where it is stored."""
    return None if registry is None else {k: v for k, v in registry.items() if k in PUBLIC}


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


def check_downloaded(got: Path, pinned: str, source: str) -> None:
    """The artifact store's folder holds the required files and nothing but a registered version's files."""
    missing = [name for name in REQUIRED if not (got / name).is_file()]
    if missing:
        raise ModelArtifactMissing(
            f"{pinned} has no {', '.join(missing)} at {source}; register models with `housing-api train --register`"
        )
    unexpected = sorted(path.name for path in got.iterdir() if path.name not in ALLOWED or not path.is_file())
    if unexpected:
        raise ModelArtifactMismatch(
            f"{pinned} holds {', '.join(unexpected)} at {source}, which no registered version holds; refusing "
            f"to start. Only {', '.join(ALLOWED)} may be there: re-register the model (housing-api train --register)"
        )


def check_vouched(source: ModelSource, recorded: str) -> None:
    """Every file in the folder is the one the registry's recorded version covers (model.verify_files)."""
    if source.registry is None or source.registry.get(RECORDED) != recorded:
        have = None if source.registry is None else source.registry.get(RECORDED)
        raise ModelArtifactMismatch(
            f"{source.path.parent} was fetched for version {have} but the registry now records {recorded}; "
            "refusing to start. Delete the folder and fetch again (housing-api fetch-model)"
        )
    verify_files(source.path, source.registry)


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

    @staticmethod
    def _store_failure(exc: Exception, what: str) -> Exception:
        """The registry answered but its artifact store (S3) did not: say which store, and what to check."""
        endpoint = redact(os.environ.get("MLFLOW_S3_ENDPOINT_URL") or "AWS S3")
        return RegistryUnavailable(
            f"the artifact store of {what} ({endpoint}) failed: {one_line(exc, 160)}; check MLFLOW_S3_ENDPOINT_URL "
            "and the S3 credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the pod's workload identity)"
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
            recorded = self._recorded_version(mv, ref)
            folder = store / ref.name / str(mv.version)
            if not (folder / PROVENANCE).is_file():
                self._download(mv, folder, recorded, ref)
        except MlflowException as exc:
            raise self._failure(exc, ref.uri) from exc
        except store_errors() as exc:
            raise self._store_failure(exc, ref.uri) from exc
        # Again for a folder an earlier fetch left: the store is checked against the registry, not trusted.
        source = ModelSource(folder / "model.joblib", read_provenance(folder, ref))
        check_vouched(source, recorded)
        write_json(store / CURRENT, {"uri": ref.uri, "name": ref.name, "version": str(mv.version)})
        return source

    @staticmethod
    def _recorded_version(mv: Any, ref: RegistryRef) -> str:
        """The model version the registry vouches for: the only thing fetched that the artifact store cannot change."""
        recorded = str(mv.tags.get(VERSION_TAG, ""))
        if recorded:
            return recorded
        pinned = f"{SCHEME}{mv.name}/{mv.version}"
        named = ref.uri if ref.version else f"{ref.uri} ({pinned})"
        if mv.tags.get(LEGACY_TAG):
            raise ModelArtifactMismatch(
                f"{named} was registered before housing-api 0.2: its {LEGACY_TAG} tag vouches for "
                f"model.joblib only, not the forest file served; refusing to start. Re-register it: "
                f'housing-api reregister {pinned} (docs/deployment.md, "Migrating registered versions")'
            )
        raise ModelArtifactMismatch(
            f"{named} has no {VERSION_TAG} tag, so nothing vouches for its files; refusing to start. "
            "Register models with `housing-api train --register`"
        )

    def _download(self, mv: Any, folder: Path, recorded: str, ref: RegistryRef) -> None:
        import mlflow.artifacts

        folder.parent.mkdir(parents=True, exist_ok=True)
        source = self.client.get_model_version_download_uri(mv.name, mv.version)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{mv.version}-") as tmp:
            got = Path(
                mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=self.tracking_uri)
            )
            check_downloaded(got, f"{SCHEME}{mv.name}/{mv.version}", redact(source))
            provenance = {"name": mv.name, "version": str(mv.version), "run_id": str(mv.run_id or ""),
                          "source": redact(source), "tracking_uri": self.where, RECORDED: recorded}  # fmt: skip
            write_json(got / PROVENANCE, provenance)
            # Refused before the rename: a folder that does not verify never enters the store.
            check_vouched(ModelSource(got / "model.joblib", read_provenance(got, ref)), recorded)
            try:
                # Versions are immutable, so a complete folder is reused by later starts. The rename
                # makes it appear whole; a concurrent fetch of the same version may win the race.
                got.rename(folder)
            except OSError:
                if not (folder / PROVENANCE).is_file():
                    raise

    # --- training side ---------------------------------------------------------------------------

    def fetch_legacy(self, pinned: str, dst: Path) -> tuple[Path, dict[str, str], dict[str, float]]:
        """A version registered before housing-api 0.2 (for `housing-api reregister`): its files in dst,
        only if model.joblib is the one its LEGACY_TAG vouches for, and its run's params and metrics.
        Its forest file and model.json are not vouched for: the caller rebuilds both from the joblib."""
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        ref = parse_ref(pinned)
        if ref.version is None:
            raise InvalidModelUri(f"{pinned}: name a version, models:/<name>/<version>, not an alias")
        try:
            mv = self.client.get_model_version(ref.name, ref.version)
            run = self.client.get_run(mv.run_id) if mv.run_id else None
            source = self.client.get_model_version_download_uri(mv.name, mv.version)
            got = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst),
                                                           tracking_uri=self.tracking_uri))  # fmt: skip
        except MlflowException as exc:
            raise self._failure(exc, pinned) from exc
        if mv.tags.get(VERSION_TAG):
            raise ModelArtifactMismatch(f"{pinned} already carries {VERSION_TAG}; serve it as it is")
        legacy = str(mv.tags.get(LEGACY_TAG, ""))
        joblib_file = got / "model.joblib"
        actual = hashlib.sha256(joblib_file.read_bytes()).hexdigest() if joblib_file.is_file() else "none"
        if not legacy or actual != legacy:
            raise ModelArtifactMismatch(
                f"{pinned}: model.joblib has sha256 {actual} but the registry's {LEGACY_TAG} is {legacy or 'unset'}; "
                "refusing to re-register it. Retrain instead: housing-api train --register"
            )
        params = dict(run.data.params) if run else {}
        metrics = {k: float(v) for k, v in run.data.metrics.items()} if run else {}
        return joblib_file, params, metrics

    def register(
        self,
        files: Mapping[str, Path],
        *,
        name: str,
        model_version: str,
        params: Mapping[str, object],
        metrics: Mapping[str, float],
        experiment: str = "housing-api",
        tags: Mapping[str, str] | None = None,
    ) -> Registered:
        """Log a run (params, metrics, the files under `model/`) and register it as a new version of `name`."""
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException, RestException

        try:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            version_tags = {VERSION_TAG: model_version, **(tags or {})}
            run = self.client.create_run(experiment_id, tags=version_tags)
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
                name, f"{run.info.artifact_uri}/{ARTIFACT_DIR}", run_id, tags=version_tags
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
