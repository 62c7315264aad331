"""predict_route: POST /predict answered in front of FastAPI's routing, with the http_* metrics the
instrumentator would record, the documented operation unchanged, and every other route untouched."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from conftest import app_client, make_settings
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from housing_api.app import create_app
from housing_api.http_metrics import HttpMetrics
from housing_api.predict_route import PredictRoute
from housing_api.schemas import SAMPLE_BATCH

GOLDEN_OPENAPI = Path(__file__).parents[1] / "golden" / "openapi-predict.json"
"""POST /predict's operation and the components in /openapi.json, recorded from main at 4181359."""


def sample(c: TestClient, name: str, **labels: str) -> float:
    value = c.app.state.metrics.registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return 0.0 if value is None else float(value)


def predict_labels(status: str) -> dict[str, str]:
    return {"handler": "/predict", "method": "POST", "status": status}


def test_post_predict_is_answered_by_the_hot_path_not_the_route() -> None:
    with app_client() as c:
        stack: Any = c.app.middleware_stack  # type: ignore[attr-defined]
        layers = []
        while stack is not None:
            layers.append(type(stack).__name__)
            stack = getattr(stack, "app", None)
        # Each layer's app is the next; the route sits behind the instrumentator, which records nothing for it.
        assert layers.index("InProgress") < layers.index("PredictRoute") < layers.index("_MemoizedHandlers")
        assert c.post("/predict", json=SAMPLE_BATCH).status_code == 200
        assert sample(c, "http_requests_total", method="POST", status="2xx", handler="/predict") == 1


def test_metrics_of_answers_and_refusals_are_the_instrumentators() -> None:
    with app_client() as c:
        bodies = [json.dumps(SAMPLE_BATCH).encode(), b"[]", b"[1, 2"]
        answers = [c.post("/predict", content=b, headers={"Content-Type": "application/json"}) for b in bodies]
        refused = c.post("/predict", content=bodies[0], headers={"Content-Type": "text/plain"})
        assert [r.status_code for r in answers] + [refused.status_code] == [200, 422, 422, 415]
        assert sample(c, "http_requests_total", method="POST", status="2xx", handler="/predict") == 1
        assert sample(c, "http_requests_total", method="POST", status="4xx", handler="/predict") == 3
        assert sample(c, "http_request_duration_seconds_count", **predict_labels("4xx")) == 3
        assert sample(c, "http_request_duration_seconds_count", **predict_labels("2xx")) == 1
        assert sample(c, "http_request_size_bytes_sum", handler="/predict") == sum(map(len, bodies)) + len(bodies[0])
        sent = sum(len(r.content) for r in [*answers, refused])
        assert sample(c, "http_response_size_bytes_sum", handler="/predict") == sent
        assert sample(c, "http_request_duration_highr_seconds_count") == 4


def test_an_unexpected_exception_is_a_500_with_the_request_id_and_counted() -> None:
    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as c:
        service = c.app.state.service  # type: ignore[attr-defined]

        async def broken(body: bytes) -> Any:
            raise RuntimeError("a bug")

        service.predict_body = broken
        r = c.post("/predict", json=SAMPLE_BATCH, headers={"x-request-id": "bug-2"})
        assert r.status_code == 500 and r.headers["x-request-id"] == "bug-2"
        assert r.json() == {"detail": "internal error; it has been logged", "errors": []}
        assert sample(c, "http_requests_total", method="POST", status="5xx", handler="/predict") == 1


def test_other_routes_and_methods_go_on_to_fastapi() -> None:
    with app_client() as c:
        assert c.get("/health").json() == {"status": "healthy"}
        assert sample(c, "http_requests_total", method="GET", status="2xx", handler="/health") == 1
        r = c.put("/predict", json=SAMPLE_BATCH)
        assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD, POST"


def test_post_predict_is_documented_exactly_as_before() -> None:
    with app_client() as c:
        spec = c.get("/openapi.json").json()
    recorded = json.loads(GOLDEN_OPENAPI.read_text())
    assert spec["paths"]["/predict"]["post"] == recorded["post"]
    assert spec["components"] == recorded["components"]


def test_the_layer_passes_through_what_it_does_not_serve() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(f"{scope['method']} {scope['path']}")

    layer = PredictRoute(inner, services=None, metrics=HttpMetrics(CollectorRegistry()))  # type: ignore[arg-type]

    for method, path, root in (("GET", "/predict", ""), ("POST", "/predict/", ""), ("POST", "/predict", "/api")):
        scope = {"type": "http", "method": method, "path": path, "root_path": root, "headers": []}
        asyncio.run(layer(scope, None, None))  # type: ignore[arg-type]
    assert seen == ["GET /predict", "POST /predict/", "POST /predict"]
