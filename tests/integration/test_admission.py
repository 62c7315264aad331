"""Admission: past the in-flight and queued-rows bounds a request gets 429 at once, and settings that
would refuse every full batch are refused at startup."""

from __future__ import annotations

import asyncio

import pytest
from conftest import make_settings, run, running_app
from helpers.model_spy import ModelSpy, rows

from housing_api.app import create_app

# serial: deadlines and shed load under a slow model; parallel workers on the same cores would skew
# them (Makefile, test).
pytestmark = pytest.mark.serial


def test_settings_refuse_a_queue_smaller_than_a_batch() -> None:
    with pytest.raises(ValueError, match="MAX_QUEUED_ROWS"):
        make_settings(max_batch_rows=100, max_queued_rows=10)


def test_past_the_inflight_bound_requests_get_429_at_once() -> None:
    async def scenario() -> tuple[list[int], list[str], bool]:
        app = create_app(make_settings(inline_predict_rows=0, max_inflight_requests=2))
        async with running_app(app) as c:
            ModelSpy(app.state.service.model, delay_s=0.5)
            admitted = [asyncio.create_task(c.post("/predict", json=rows(1, start=30 + i))) for i in range(2)]
            await asyncio.sleep(0.1)
            refused = await asyncio.gather(*(c.post("/predict", json=rows(1, start=40 + i)) for i in range(5)))
            refused_while_busy = not any(t.done() for t in admitted)
            done = await asyncio.gather(*admitted)
            return (
                [r.status_code for r in [*done, *refused]],
                [r.headers.get("Retry-After", "") for r in refused],
                refused_while_busy,
            )

    statuses, retry_after, refused_while_busy = run(scenario())
    assert statuses == [200, 200, 429, 429, 429, 429, 429]
    assert all(v.isdigit() for v in retry_after)
    assert refused_while_busy  # refusals did not wait for the model


def test_past_the_queued_rows_bound_requests_get_429() -> None:
    async def scenario() -> list[int]:
        app = create_app(make_settings(inline_predict_rows=0, max_batch_rows=5, max_queued_rows=8))
        async with running_app(app) as c:
            ModelSpy(app.state.service.model, delay_s=0.3)
            first = asyncio.create_task(c.post("/predict", json=rows(5, start=50)))
            await asyncio.sleep(0.05)
            second = await c.post("/predict", json=rows(5, start=60))
            return [(await first).status_code, second.status_code]

    assert run(scenario()) == [200, 429]
