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


class DeadlineExceeded(Exception):
    """A request's rows were not resolved within REQUEST_TIMEOUT_S."""

    def __init__(self, timeout_s: float, retry_after_s: int = 1) -> None:
        super().__init__(f"no prediction within {timeout_s:g} s")
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s


class BodyTimeout(Exception):
    """The client did not finish sending its body within BODY_TIMEOUT_S."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request body did not arrive within {timeout_s:g} s")
        self.timeout_s = timeout_s


class StageFailed(Exception):
    """A background stage failed on the batch that held these rows; the error has been logged."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"the {stage} stage failed on this batch")
        self.stage = stage


class NotReady(Exception):
    """A part the service needs to answer is down (a background stage being restarted)."""


class StageStuck(NotReady):
    """A background stage has stayed down past STAGE_DOWN_LIVEZ_S: only a new process will help."""


class InvalidModelUri(ModelArtifactError):
    """MODEL_URI is neither a local path nor a models:/ registry reference."""


class ModelVersionNotFound(ModelArtifactMissing):
    """The registry has no such registered model, version or alias."""


class RegistryUnavailable(ModelArtifactError):
    """The MLflow registry cannot be reached or refused the request."""


class TrainingDataMissing(RuntimeError):
    """The California housing data is not where SCIKIT_LEARN_DATA says."""
