"""stages.py: a supervised stage costs a failing batch only its rows, is restarted when it dies, says
so on /readyz meanwhile, and fails /livez only when it stays down (in-process, no Redis)."""

from __future__ import annotations

import asyncio

from conftest import make_settings, running_app
from fastapi import FastAPI
from helpers.faulty_model import ROW, FaultyModel, faulty_app, fresh_rows

from housing_api.app import create_app


def metric(app: FastAPI, name: str, **labels: str) -> float:
    return app.state.metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_model_that_raises_costs_only_its_batch() -> None:
    async def scenario() -> None:
        app, faults = faulty_app()
        async with running_app(app) as c:
            faults()
            bad = await c.post("/predict", json=[{**ROW, "MedInc": FaultyModel.RAISE}])
            assert bad.status_code == 500 and "model stage failed" in bad.json()["detail"]
            good = await c.post("/predict", json=fresh_rows(3, 2.0))
            assert good.status_code == 200
            assert metric(app, "housing_api_worker_errors_total", stage="model") == 1
            assert len(app.state.service.resolver.inflight) == 0

    asyncio.run(scenario())


def test_an_unexpected_exception_type_restarts_the_stage() -> None:
    async def scenario() -> None:
        app, faults = faulty_app()
        async with running_app(app) as c:
            faults()
            bad = await c.post("/predict", json=[{**ROW, "MedInc": FaultyModel.KILL}])
            assert bad.status_code == 500
            for _ in range(100):  # restarted within a second
                if (await c.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.01)
            assert (await c.get("/readyz")).status_code == 200
            assert metric(app, "housing_api_stage_up", stage="model") == 1
            assert (await c.post("/predict", json=fresh_rows(2, 3.0))).status_code == 200

    asyncio.run(scenario())


def test_a_stage_that_dies_is_restarted_and_readyz_says_so_meanwhile() -> None:
    async def scenario() -> None:
        app = create_app(make_settings())
        async with running_app(app) as c:
            stage = app.state.service.resolver.predictor
            stage._task.cancel()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert not stage.up
            assert (await c.get("/readyz")).status_code == 503
            assert metric(app, "housing_api_stage_up", stage="model") == 0
            await asyncio.sleep(0.5)
            assert stage.up and (await c.get("/readyz")).status_code == 200
            assert (await c.post("/predict", json=fresh_rows(2, 4.0))).status_code == 200

    asyncio.run(scenario())


def test_a_stage_that_stays_down_fails_livez_so_the_kubelet_restarts_the_pod() -> None:
    async def scenario() -> None:
        app = create_app(make_settings(stage_down_livez_s=0.3))
        async with running_app(app) as c:
            stage = app.state.service.resolver.predictor
            stage._restart = lambda: None  # a supervisor that cannot bring its stage back
            stage._task.cancel()
            await asyncio.sleep(0.05)
            assert not stage.up and (await c.get("/readyz")).status_code == 503
            assert (await c.get("/livez")).status_code == 200  # down, but not for long yet
            await asyncio.sleep(0.4)
            live = await c.get("/livez")
            assert live.status_code == 503, live.text
            assert "stage model down for over 0.3 s" in live.json()["detail"]

    asyncio.run(scenario())


def test_a_stage_restarted_in_time_never_fails_livez() -> None:
    async def scenario() -> None:
        app = create_app(make_settings(stage_down_livez_s=0.3))
        async with running_app(app) as c:
            stage = app.state.service.resolver.predictor
            for _ in range(5):  # down five times, 50 ms each: never 0.3 s in a row
                stage._task.cancel()
                await asyncio.sleep(0.1)
                assert stage.up and (await c.get("/livez")).status_code == 200

    asyncio.run(scenario())


def test_a_hanging_model_costs_its_requests_the_deadline_and_nothing_more() -> None:
    async def scenario() -> None:
        app, faults = faulty_app(request_timeout_s=0.5)
        async with running_app(app) as c:
            model = faults()
            model.hang_s = 2.0
            hung = await c.post("/predict", json=[{**ROW, "MedInc": FaultyModel.HANG}])
            assert hung.status_code == 503 and hung.headers["Retry-After"] == "1"
            assert "timed out" in hung.json()["detail"]
            service = app.state.service
            assert service.inflight == 0  # the admission slot is back
            assert metric(app, "housing_api_request_timeouts_total", kind="request") == 1
            # The stage gave up on the hung call and took a fresh inference thread: new rows go on.
            ok = await c.post("/predict", json=fresh_rows(3, 5.0))
            assert ok.status_code == 200
            assert len(service.resolver.inflight) == 0
            model.release.set()

    asyncio.run(scenario())


def test_a_stage_takes_at_most_batch_max_items_in_queue_order() -> None:
    from prometheus_client import CollectorRegistry

    from housing_api.metrics import ServiceMetrics
    from housing_api.stages import Stage

    async def scenario() -> list[list[int]]:
        batches: list[list[int]] = []

        async def handle(batch: list[int]) -> None:
            batches.append(batch)

        stage: Stage[int] = Stage("t", handle, lambda _b, _e: None, ServiceMetrics(CollectorRegistry()),
                                  batch_max=4, bound_s=1.0)  # fmt: skip
        stage.put(list(range(10)))
        stage.start()
        await stage.stop(1.0)
        return batches

    assert asyncio.run(scenario()) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
