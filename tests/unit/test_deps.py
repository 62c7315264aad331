"""deps.py: the holder the routes read. create_app builds it with the body reader; the lifespan fills in
the service and the GET response cache before the first request."""

from __future__ import annotations

import copy

import pytest
from conftest import make_settings, run, running_app

from housing_api.app import create_app
from housing_api.body import BodyReader
from housing_api.deps import Services
from housing_api.drift import DriftConfig
from housing_api.http_cache import HttpCacheBackend
from housing_api.service import PredictionService


def test_the_body_reader_is_there_from_create_app_and_the_rest_only_once_the_lifespan_runs() -> None:
    app = create_app(make_settings(max_body_bytes=4096))
    services: Services = app.state.services
    assert isinstance(services.body, BodyReader) and services.body.max_bytes == 4096
    with pytest.raises(AttributeError):
        services.service  # noqa: B018  (not set before the lifespan)

    async def scenario() -> None:
        async with running_app(app):
            assert isinstance(services.service, PredictionService)
            assert services.service is app.state.service
            assert isinstance(services.http_cache, HttpCacheBackend)

    run(scenario())


def test_the_routes_answer_from_the_holder_they_were_built_with() -> None:
    app = create_app(make_settings())
    services: Services = app.state.services

    async def scenario() -> tuple[dict[str, object], dict[str, object]]:
        async with running_app(app) as c:
            before = (await c.get("/model")).json()["drift"]
            # Another service in the holder (a copy with another drift configuration): the routes read
            # services.service on each request, so it is the one that answers.
            other = copy.copy(services.service)
            other.drift = DriftConfig("0123456789abcdef", 0.5, active=False)
            services.service = other
            return before, (await c.get("/model")).json()["drift"]

    before, after = run(scenario())
    assert before == {"stable_model_version": "", "sample": 0.05, "active": False}
    assert after == {"stable_model_version": "0123456789abcdef", "sample": 0.5, "active": False}
