"""An unexpected error is a JSON 500 that poisons nothing, and a client that gives up does not cancel
the work others wait for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import make_settings, run, running_app
from helpers.model_spy import ModelSpy, rows

from housing_api.app import create_app

# serial: deadlines and shed load under a slow model; parallel workers on the same cores would skew
# them (Makefile, test).
pytestmark = pytest.mark.serial


def test_unexpected_errors_are_a_json_500_not_a_crash() -> None:
    async def scenario() -> tuple[int, dict[str, Any], int]:
        app = create_app(make_settings())
        async with running_app(app) as c:
            model = app.state.service.model
            original = model.predict
            model.predict = lambda X: (_ for _ in ()).throw(RuntimeError("boom"))
            broken = await c.post("/predict", json=rows(2, start=90))
            model.predict = original
            healthy = await c.post("/predict", json=rows(2, start=90))
            return broken.status_code, broken.json(), healthy.status_code

    status, body, after = run(scenario())
    assert status == 500 and body["detail"].startswith("internal error")
    assert after == 200  # a failed model call does not poison the rows it was computing


def test_admitted_requests_are_answered_when_the_client_gives_up() -> None:
    async def scenario() -> int:
        app = create_app(make_settings(inline_predict_rows=0))
        async with running_app(app) as c:
            ModelSpy(app.state.service.model, delay_s=0.3)
            same = rows(1, start=95)
            impatient = asyncio.create_task(c.post("/predict", json=same))
            await asyncio.sleep(0.05)
            patient = asyncio.create_task(c.post("/predict", json=same))
            await asyncio.sleep(0.05)
            impatient.cancel()
            return (await patient).status_code

    assert run(scenario()) == 200
