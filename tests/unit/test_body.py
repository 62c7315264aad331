"""body.py: POST bodies are read within MAX_BODY_BYTES and a shared budget of bytes being read."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import make_settings, running_app

from housing_api.app import create_app


def test_bodies_being_read_are_bounded_in_memory_and_refused_with_429() -> None:
    async def scenario() -> None:
        # 2 slots x 1 MiB: a third large upload in progress would pass the budget.
        app = create_app(make_settings(max_inflight_requests=2, max_body_bytes=1_048_576))
        async with running_app(app) as c:
            gate = asyncio.Event()

            async def slow_body() -> Any:
                yield b"[" + b" " * 700_000
                await gate.wait()
                yield b"]"

            held = [asyncio.create_task(c.post("/predict", content=slow_body())) for _ in range(2)]
            while app.state.services.body.budget.held < 1_400_000:
                await asyncio.sleep(0.01)
            third = await c.post("/predict", content=b"[" + b" " * 700_000 + b"]")
            assert third.status_code == 429 and "bodies being read" in third.json()["detail"]
            gate.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [422, 422]  # an empty batch
            assert app.state.services.body.budget.held == 0

    asyncio.run(scenario())


def test_oversized_chunked_bodies_give_back_exactly_what_they_took() -> None:
    """A chunked body past MAX_BODY_BYTES is refused (413) without leaving the budget below zero:
    a refused chunk was never taken, so it is not given back. Then the budget still refuses once
    its real limit is held by stalled uploads."""

    async def scenario() -> None:
        # 2 slots x 1024 bytes: the budget is 2048.
        app = create_app(make_settings(max_inflight_requests=2, max_body_bytes=1024))
        budget = app.state.services.body.budget

        async def oversized() -> Any:
            for _ in range(3):
                yield b" " * 600  # the second chunk passes the limit

        async with running_app(app) as c:
            for _ in range(20):
                r = await c.post("/predict", content=oversized())
                assert r.status_code == 413 and r.json()["errors"] == []
                assert budget.held == 0
            gate = asyncio.Event()

            async def stalled() -> Any:
                yield b"[" + b" " * 999
                await gate.wait()
                yield b"]"

            held = [asyncio.create_task(c.post("/predict", content=stalled())) for _ in range(2)]
            while budget.held < 2000:
                await asyncio.sleep(0.01)
            third = await c.post("/predict", content=stalled())
            assert third.status_code == 429 and "bodies being read" in third.json()["detail"]
            gate.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [422, 422]  # an empty batch
            assert budget.held == 0

    asyncio.run(scenario())
