"""Two model versions sharing one Redis, as during a canary release: a stable app serving the
committed model (A) and a canary app serving another one (B, conftest.other_model) started with
STABLE_MODEL_VERSION = A's version. Used by test_drift_live.py and by the Sentinel and Cluster tests.

What the apps answer is checked against scikit-learn's own predict() on each estimator, never
against the service's inference code.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from conftest import MODEL_PATH, make_settings, other_model, running_app
from fastapi import FastAPI

from housing_api import FEATURES
from housing_api.app import create_app
from housing_api.metrics import DRIFT_BUCKETS
from housing_api.model import load_model
from housing_api.stages import Stage

OUTCOMES = ("compared", "stable_missing", "invalid", "dropped")


def stable_version() -> str:
    return load_model(MODEL_PATH).version


def random_rows(n: int, seed: int) -> list[dict[str, float]]:
    """Valid rows spread over the features' ranges, so the two models disagree by varied amounts."""
    rng = np.random.default_rng(seed)
    low, high = [0.5, 1, 1, 0.5, 10, 1, 33, -124], [15, 52, 10, 2, 5000, 6, 42, -114]
    return [dict(zip(FEATURES, map(float, r), strict=True)) for r in rng.uniform(low, high, size=(n, 8))]


def sklearn_predict(estimator: Any, rows: list[dict[str, float]]) -> list[float]:
    values: list[float] = estimator.predict(np.array([[r[f] for f in FEATURES] for r in rows])).tolist()
    return values


async def idle(stage: Stage[Any] | None, timeout_s: float = 10.0) -> None:
    """Until a stage has nothing queued or in hand (bounded). A request's rows are queued for the
    write-behind and drift stages before its answer is sent, so after the answer this is enough."""
    assert stage is not None
    deadline = time.monotonic() + timeout_s
    while stage.queue or stage.busy:
        assert time.monotonic() < deadline, f"stage {stage.name} still busy after {timeout_s} s"
        await asyncio.sleep(0.01)


def drift_rows(app: FastAPI) -> dict[str, float]:
    value = app.state.metrics.registry.get_sample_value
    return {o: value("housing_api_drift_rows_total", {"outcome": o}) for o in OUTCOMES}


def drift_histogram(app: FastAPI) -> tuple[float, list[float]]:
    """(sum, cumulative count per bucket, +Inf last) of housing_api_prediction_drift."""
    value = app.state.metrics.registry.get_sample_value
    bounds = [repr(float(b)) for b in DRIFT_BUCKETS] + ["+Inf"]
    counts = [value("housing_api_prediction_drift_bucket", {"le": le}) for le in bounds]
    return value("housing_api_prediction_drift_sum"), counts


def expected_histogram(differences: list[float]) -> tuple[float, list[float]]:
    d = np.array(differences)
    return float(d.sum()), [float((d <= b).sum()) for b in DRIFT_BUCKETS] + [float(len(d))]


@dataclass
class Pair:
    """The stable and canary apps' answers, and the true |A(row) - B(row)| of the rows both know."""

    stable_first: list[float]
    canary_first: list[float]
    stable_again: list[float]
    canary_again: list[float]
    canary_again_cache: str
    expected_stable: list[float]
    expected_canary: list[float]
    differences: list[float]
    canary: FastAPI = field(repr=False)


async def stable_then_canary(tmp_path: Path, seen: int, unseen: int, **redis: Any) -> Pair:
    """The stable app answers `seen` rows; then the canary answers those and `unseen` more; then
    both answer every row again (from Redis: neither has an in-process tier)."""
    other_path, other = other_model(tmp_path)
    common = {"memory_cache_rows": 0, **redis}
    stable = create_app(make_settings(**common))
    prefix = stable.state.settings.cache_prefix
    canary = create_app(make_settings(**common, cache_prefix=prefix, model_path=other_path,
                                      stable_model_version=stable_version(), drift_sample=1.0))  # fmt: skip
    rows = random_rows(seen + unseen, seed=seen)

    async def predict(client: httpx.AsyncClient, body: list[dict[str, float]]) -> httpx.Response:
        response = await client.post("/predict", json=body)
        assert response.status_code == 200, response.text
        return response

    async with running_app(stable) as s, running_app(canary) as c:
        stable_first = (await predict(s, rows[:seen])).json()["prediction"]
        await idle(stable.state.service.resolver.writer)
        canary_first = (await predict(c, rows)).json()["prediction"]
        await idle(canary.state.service.resolver.drift_stage)
        stable_again = (await predict(s, rows)).json()["prediction"]
        again = await predict(c, rows)
    expected_stable = sklearn_predict(joblib.load(MODEL_PATH), rows)
    expected_canary = sklearn_predict(other, rows)
    return Pair(
        stable_first, canary_first, stable_again, again.json()["prediction"], again.headers["X-Cache"],
        expected_stable, expected_canary,
        [abs(b - a) for a, b in zip(expected_stable[:seen], expected_canary[:seen], strict=True)], canary,
    )  # fmt: skip


def assert_true_drift(pair: Pair, compared: int, stable_missing: int) -> None:
    """The canary recorded |A - B| of exactly the rows the stable version had answered."""
    assert drift_rows(pair.canary) == {
        "compared": compared,
        "stable_missing": stable_missing,
        "invalid": 0,
        "dropped": 0,
    }
    total, buckets = drift_histogram(pair.canary)
    expected_total, expected_buckets = expected_histogram(pair.differences)
    assert total == pytest.approx(expected_total, rel=1e-9)
    assert buckets == expected_buckets


def assert_each_serves_its_own(pair: Pair) -> None:
    """Each version answered with its own model's predictions, also from Redis once both had written."""
    assert pair.stable_first == pytest.approx(pair.expected_stable[: len(pair.stable_first)], rel=1e-12)
    assert pair.canary_first == pytest.approx(pair.expected_canary, rel=1e-12)
    assert pair.canary_again_cache == "HIT"
    assert pair.stable_again == pytest.approx(pair.expected_stable, rel=1e-12)
    assert pair.canary_again == pytest.approx(pair.expected_canary, rel=1e-12)
