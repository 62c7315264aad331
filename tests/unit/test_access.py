"""Every request has an id, sent back in x-request-id; the access log samples, but never drops a 5xx
or a slow request. In-process, tracing off."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import ROOT, app_client, make_settings
from fastapi.testclient import TestClient

from housing_api.access import AccessLog
from housing_api.app import create_app
from housing_api.logs import ACCESS_LOGGER, JsonFormatter
from housing_api.schemas import SAMPLE_BATCH

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def access_lines() -> Iterator[list[dict[str, object]]]:
    """The access logger's lines, formatted as in production (JSON)."""
    lines: list[dict[str, object]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(self.format(record)))

    handler = Keep()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)  # setLevel, not `.level =`: it clears the loggers' isEnabledFor cache
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_the_callers_request_id_comes_back_and_one_is_made_up_otherwise() -> None:
    with app_client() as c:
        given = c.post("/predict", json=SAMPLE_BATCH, headers={"x-request-id": "istio-abc"})
        made = [c.get("/livez").headers["x-request-id"] for _ in range(3)]
        not_found = c.get("/nowhere", headers={"x-request-id": "istio-def"})
    assert given.status_code == 200 and given.headers["x-request-id"] == "istio-abc"
    assert len(set(made)) == 3 and all(len(i) == 32 for i in made)
    assert not_found.status_code == 404 and not_found.headers["x-request-id"] == "istio-def"


def test_every_request_gets_a_line_at_sample_rate_one(access_lines: list[dict[str, object]]) -> None:
    with app_client(access_log_sample=1.0) as c:
        c.post("/predict", json=SAMPLE_BATCH, headers={"x-request-id": "r1", "traceparent": TRACEPARENT})
        c.get("/predict", params={**SAMPLE_BATCH[0], "MedInc": 1.5})
    post, get = (line for line in access_lines if line["http"]["route"] == "/predict")  # type: ignore[index]
    assert (post["request_id"], post["trace_id"]) == ("r1", "4bf92f3577b34da6a3ce929d0e0e4736")
    assert post["http"] == {**post["http"], "method": "POST", "path": "/predict", "status": 200}  # type: ignore[dict-item]
    assert "trace_id" not in get  # tracing off and no traceparent: none is made up
    assert "MedInc" not in json.dumps(get)  # the query string (a client's row) is not logged


def test_no_line_at_sample_rate_zero(access_lines: list[dict[str, object]]) -> None:
    with app_client(access_log_sample=0.0) as c:
        for _ in range(20):
            c.post("/predict", json=SAMPLE_BATCH)
    assert access_lines == []


def test_an_unanswered_exception_is_a_500_with_its_id_and_always_a_line(access_lines: list[dict[str, object]]) -> None:
    app = create_app(make_settings(access_log_sample=0.0))

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.get("/boom", headers={"x-request-id": "bug-1"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "bug-1"
    (line,) = access_lines
    assert (line["request_id"], line["level"], line["http"]["status"]) == ("bug-1", "warning", 500)  # type: ignore[index]


@pytest.mark.parametrize(
    ("status", "elapsed_s", "draw", "wanted"),
    [
        (200, 0.001, 0.5, False),
        (200, 0.001, 0.001, True),  # drawn
        (503, 0.001, 0.5, True),  # every 5xx
        (500, 0.001, 0.5, True),
        (429, 0.001, 0.5, False),  # a 4xx is the client's: sampled like a 200
        (200, 1.0, 0.5, True),  # every slow request
    ],
)
def test_which_requests_get_a_line(status: int, elapsed_s: float, draw: float, wanted: bool) -> None:
    access = AccessLog(sample=0.01, slow_s=1.0)
    access.draw = lambda: draw
    assert access.wanted(status, elapsed_s) is wanted


SERVE_UNTRACED = """
import json, sys
from conftest import make_settings
from fastapi.testclient import TestClient
from housing_api.app import create_app
from housing_api.schemas import SAMPLE_BATCH

with TestClient(create_app(make_settings())) as client:
    status = client.post("/predict", json=SAMPLE_BATCH).status_code
    tracing = client.app.state.service.resolver.tracing
loaded = sorted(m for m in sys.modules if m.startswith(TRACING))
print(json.dumps({"status": status, "tracing": tracing is not None, "loaded": loaded}))
""".replace("TRACING", repr(("housing_api.tracing", "opentelemetry.sdk.trace", "opentelemetry.exporter")))


@pytest.mark.integration
def test_tracing_is_off_by_default_and_its_sdk_never_imported() -> None:
    # A fresh interpreter: other tests here import the SDK. (FastAPI imports OpenTelemetry's API, and
    # redis-py the SDK's metrics when installed, for their own opt-in telemetry: not ours to avoid.)
    result = subprocess.run([sys.executable, "-c", SERVE_UNTRACED], cwd=ROOT / "tests", capture_output=True,
                            text=True, timeout=120, check=True)  # fmt: skip
    assert json.loads(result.stdout.splitlines()[-1]) == {"status": 200, "tracing": False, "loaded": []}
