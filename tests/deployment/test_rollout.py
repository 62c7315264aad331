"""A model release decided as Flagger decides it, on real processes (rollout.py has the scenario):
models from an S3 artifact store (moto's server) through `housing-api fetch-model`, a primary and
four canaries sharing one Redis, a real Prometheus, and the rendered prod Canary's checks.

One scenario serves the whole module (MLflow starts slowly): the S3 tests use its registry.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from housing_api import FEATURES
from housing_api.model import load_model
from housing_api_testing.canary_analysis import Check, decision, single_value
from housing_api_testing.harness import Unavailable
from housing_api_testing.prom import PrometheusUnavailable
from housing_api_testing.rollout import CANARIES, DATA, Rollout, pool

# serial: a canary's p99 against the 50 ms threshold: parallel workers on the same cores would skew it
# (the Makefile's test target).
pytestmark = [pytest.mark.integration, pytest.mark.serial]


def kubectl() -> str:
    search = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))
    found = shutil.which("kubectl", path=search)
    if found is None:
        pytest.skip("no kubectl in .venv/bin or on PATH (make install)")
    return found


@pytest.fixture(scope="module")
def rollout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rollout]:
    """The scenario, analysed: versions registered and fetched, the fleet loaded and scraped, every
    canary's checks and the dashboard's per-version queries evaluated right after the load."""
    if not (DATA / "cal_housing_py3.pkz").is_file():
        pytest.skip(f"offline data copy not found at {DATA}")
    scenario = Rollout(tmp_path_factory.mktemp("rollout"), kubectl())
    try:
        scenario.run()
    except (Unavailable, PrometheusUnavailable) as exc:
        scenario.stop()
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    except BaseException:
        scenario.stop()
        raise
    yield scenario
    scenario.stop()


# --- models from S3 -------------------------------------------------------------------------------


def test_fetch_model_fetches_a_version_from_s3_and_verifies_it(rollout: Rollout) -> None:
    code, output = rollout.fetched["stable"]
    number = rollout.versions.number["stable"]
    digest = rollout.versions.digest["stable"]
    assert code == 0 and f"= models:/housing/{number} (version {digest[:16]})" in output, output
    keys = [o["Key"] for o in rollout.moto.s3().list_objects_v2(Bucket=rollout.moto.bucket)["Contents"]]
    # The registry's files are in the bucket, nowhere on the MLflow server's disk.
    assert sum(key.endswith("/model/model.json") for key in keys) == len(rollout.versions.number)
    assert not rollout.mlflow.artifacts.exists()
    for role, path in rollout.versions.path.items():
        assert path.read_bytes() == (rollout.tmp / f"trained-{role}" / "model.joblib").read_bytes()
        registry = json.loads((path.parent / "registry.json").read_text())
        assert registry["source"].startswith(f"s3://{rollout.moto.bucket}/"), registry


def test_an_object_changed_in_the_bucket_is_refused(rollout: Rollout) -> None:
    code, output = rollout.fetched["tampered"]
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("housing-api: cannot fetch: "), lines
    number = rollout.versions.number["tampered"]
    assert f"models:/housing/{number}" in lines[0] and "refusing to start" in lines[0], lines
    assert not any((rollout.tmp / "store-tampered" / "housing").glob("*/model.joblib"))


def test_an_unreachable_s3_fails_fetch_model_with_one_clear_line(rollout: Rollout) -> None:
    # The registry answers; only its artifact store is gone. finished() bounded the wait.
    code, output = rollout.fetched["unreachable"]
    assert code == 2, output[-3000:]
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("housing-api: cannot fetch: "), lines
    assert f"({rollout.dead_s3})" in lines[0] and "MLFLOW_S3_ENDPOINT_URL" in lines[0], lines


# --- the analysis, as Flagger runs it ---------------------------------------------------------------


def test_each_canary_gets_flaggers_decision_from_the_rendered_checks_on_real_prometheus(rollout: Rollout) -> None:
    print(rollout.report())
    assert rollout.decisions == {c.name: c.expected for c in CANARIES}, rollout.report()
    by_name = {c.name: {check.name: check for check in rollout.results[c.name]} for c in CANARIES}
    # Each bad canary fails for its own reason, and only for it.
    failed = {name: sorted(n for n, check in checks.items() if not check.passed) for name, checks in by_name.items()}
    assert failed == {"sound": [], "errors": ["5xx-ratio"], "slow": ["p99-latency"], "drift": ["prediction-drift"]}
    # The injected faults reached the clients as they reached Prometheus.
    assert rollout.counts["errors"].get(500, 0) > 0
    assert not [status for status in rollout.counts["sound"] if status >= 300], rollout.counts["sound"]


def test_the_two_versions_never_serve_each_others_cached_answers(rollout: Rollout) -> None:
    batch = pool(40, seed=3)
    X = np.array([[row[f] for f in FEATURES] for row in batch])
    want = {role: [float(v) for v in load_model(path).predict(X)] for role, path in rollout.versions.path.items()}
    assert all(a != b for a, b in zip(want["stable"], want["sound"], strict=True))
    served = {"primary": "stable", "sound": "sound", "drift": "different"}
    # Computed by each (the other versions' answers for these rows are in Redis by then), then cached.
    for status in ("MISS", "HIT"):
        for name, role in served.items():
            answer = httpx.post(rollout.services[name].url + "/predict", json=batch, timeout=30)
            assert (answer.json()["prediction"], answer.headers["X-Cache"]) == (want[role], status), name
    assert {answer_version(rollout, n) for n in served} == {rollout.versions.digest[r] for r in served.values()}


def answer_version(rollout: Rollout, name: str) -> str:
    return str(httpx.get(rollout.services[name].url + "/model", timeout=10).json()["version"])


def test_the_dashboards_per_version_queries_give_one_series_per_version(rollout: Rollout) -> None:
    assert rollout.panels, "the dashboard has no query that names model_version"
    versions = {rollout.versions.digest[role][:12] for role in ("stable", "sound", "different")}
    for expr, result in rollout.panels.items():
        # One series per version and per any other label the panel groups by (the cache's tier).
        grouped = [tuple(sorted(series["metric"].items())) for series in result]
        per_version = {dict(labels).get("model_version") for labels in grouped}
        assert len(grouped) == len(set(grouped)) and per_version == versions, f"{expr}: {grouped}"


# --- Flagger's rules, on their own --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "value"),
    [([], None), ([{"value": [0, "NaN"]}], None), ([{"value": [0, "0.5"]}], 0.5)],
)
def test_no_data_or_nan_is_no_value(result: list[dict[str, object]], value: float | None) -> None:
    assert single_value(result) == value


def test_a_check_without_a_value_or_out_of_range_fails_the_canary() -> None:
    ok = Check("a", "q", 0.5, None, 1.0)
    assert decision([ok]) == "promote"
    assert decision([ok, Check("b", "q", None, None, 1.0)]) == "rollback"
    assert decision([ok, Check("c", "q", 2.0, None, 1.0)]) == "rollback"
    assert decision([ok, Check("d", "q", 0.1, 0.2, None)]) == "rollback"
    assert decision([]) == "rollback"  # a Canary whose checks were all dropped promotes nothing
