"""app.py: what create_app builds before anything is loaded, and what its lifespan starts and stops,
with the in-process tier only (the `make run` default; Redis modes: tests/integration/)."""

from __future__ import annotations

from conftest import MODEL_PATH, make_settings, run, running_app
from fastapi.testclient import TestClient

from housing_api.app import _drift, create_app, model_source
from housing_api.schemas import SAMPLE_BATCH


def test_create_app_loads_and_connects_nothing() -> None:
    app = create_app(make_settings(model_path=MODEL_PATH.parent / "not-there.joblib"))
    assert not hasattr(app.state, "service")  # the model path is read by the lifespan, not here
    assert app.state.settings.model_path.name == "not-there.joblib"


def test_the_documented_operations_and_the_body_limit_from_the_settings() -> None:
    document = create_app(make_settings(max_batch_rows=7)).openapi()
    operations = {(method, path) for path, item in document["paths"].items() for method in item}
    assert operations == {
        ("post", "/predict"), ("get", "/predict"), ("get", "/health"), ("get", "/livez"), ("get", "/readyz"),
        ("get", "/model"),
    }  # fmt: skip
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["maxItems"] == 7


def test_metrics_and_the_local_docs_are_served_and_redoc_is_not() -> None:
    with TestClient(create_app(make_settings())) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/docs").status_code == 200
        assert c.get("/redoc").status_code == 404  # its bundle loads its logo from a CDN


def test_the_lifespan_starts_the_chain_memory_then_model_and_stops_it() -> None:
    app = create_app(make_settings(memory_cache_rows=100))

    async def scenario() -> tuple[object, list[str], list[bool], list[bool], dict[str, object]]:
        async with running_app(app) as c:
            resolver = app.state.service.resolver
            chain = [tier.name for tier in resolver.tiers]
            stages = [stage.up for stage in resolver.stages]
            ready = (await c.get("/readyz")).json()
            answered = (await c.post("/predict", json=SAMPLE_BATCH)).json()["prediction"]
            again = (await c.post("/predict", json=SAMPLE_BATCH)).headers["X-Cache"]
            assert len(answered) == 4 and again == "HIT"
        # Stopped by the lifespan itself, while this loop still runs (asyncio.run would cancel them after).
        return resolver, chain, stages, [stage.up for stage in resolver.stages], ready

    resolver, chain, stages, after, ready = run(scenario())
    assert chain == ["redis", "model"]  # Redis is a link without a server: skipped, never a failure
    assert stages == [True] * len(stages) and resolver.redis is None  # type: ignore[attr-defined]
    assert ready["status"] == "ready" and ready["cache"] == "disabled"
    assert not any(after)


def test_each_app_has_its_own_metrics_registry() -> None:
    one, two = create_app(make_settings()), create_app(make_settings())
    assert one.state.metrics.registry is not two.state.metrics.registry


def test_no_drift_check_without_redis_even_with_a_stable_version() -> None:
    settings = make_settings(stable_model_version="0123456789abcdef", drift_sample=0.5)
    config, check = _drift(settings, "ffff" * 16, None, None)  # type: ignore[arg-type]
    assert (config.stable_model_version, config.active, check) == ("0123456789abcdef", False, None)


def test_the_model_comes_from_model_path_without_model_uri() -> None:
    source = model_source(make_settings())
    assert (source.path, source.registry) == (MODEL_PATH, None)
