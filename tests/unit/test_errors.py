"""errors.py: the domain errors say what happened in words a client can read, and carry what api.py
needs to answer (Retry-After); the families api.py and the CLI catch hold the right members."""

from __future__ import annotations

import pytest

from housing_api import errors


def test_overload_and_deadline_carry_their_retry_after() -> None:
    assert (errors.Overloaded("too many rows queued").retry_after_s, str(errors.Overloaded("x", 3))) == (1, "x")
    late = errors.DeadlineExceeded(2.0, retry_after_s=4)
    assert (str(late), late.timeout_s, late.retry_after_s) == ("no prediction within 2 s", 2.0, 4)


def test_the_messages_name_the_bound_and_the_stage() -> None:
    assert str(errors.BodyTimeout(10.0)) == "the request body did not arrive within 10 s"
    failed = errors.StageFailed("model")
    assert (str(failed), failed.stage) == ("the model stage failed on this batch", "model")


@pytest.mark.parametrize(
    "kind",
    [errors.ModelArtifactMissing, errors.ModelArtifactMismatch, errors.IncompatibleModel, errors.InvalidModelUri,
     errors.ModelVersionNotFound, errors.RegistryUnavailable],
)  # fmt: skip
def test_every_model_artifact_problem_stops_startup_the_same_way(kind: type[Exception]) -> None:
    # cli.py catches ModelArtifactError to print one line and exit 2.
    assert issubclass(kind, errors.ModelArtifactError)


def test_a_missing_registry_version_is_a_missing_artifact_and_a_stuck_stage_is_not_ready() -> None:
    assert issubclass(errors.ModelVersionNotFound, errors.ModelArtifactMissing)
    assert issubclass(errors.StageStuck, errors.NotReady)
    assert not issubclass(errors.TrainingDataMissing, errors.ModelArtifactError)
