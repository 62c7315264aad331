"""Domain exceptions. They know nothing about HTTP; api.py maps them to status codes."""


class ModelArtifactError(RuntimeError):
    """The model artifact cannot be used; the message says what is wrong and how to fix it."""


class ModelArtifactMissing(ModelArtifactError):
    """The artifact or its metadata file does not exist."""


class ModelArtifactMismatch(ModelArtifactError):
    """The artifact's sha256 is not the one recorded in model.json (tampered or stale)."""


class IncompatibleModel(ModelArtifactError):
    """The artifact was written by a scikit-learn version this process cannot load safely."""


class Overloaded(Exception):
    """Admission is full: too many requests in flight or rows queued for the model."""

    def __init__(self, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class ShuttingDown(Exception):
    """The service is draining and accepts no new work."""


class InvalidModelUri(ModelArtifactError):
    """MODEL_URI is neither a local path nor a models:/ registry reference."""


class ModelVersionNotFound(ModelArtifactMissing):
    """The registry has no such registered model, version or alias."""


class RegistryUnavailable(ModelArtifactError):
    """The MLflow registry cannot be reached or refused the request."""


class TrainingDataMissing(RuntimeError):
    """The California housing data is not where SCIKIT_LEARN_DATA says."""
