"""A randomized schedule of model and Redis faults never hangs a request: every answer is a documented
status, and the service is whole afterwards. Real redis-server."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from conftest import RedisServer, running_app
from helpers.faulty_model import FaultyModel, faulty_app, fresh_rows
from helpers.poison import GET_POISON, POISON, http_key, row_key

from housing_api.schemas import SAMPLE_BATCH

pytestmark = pytest.mark.integration


ROW = SAMPLE_BATCH[0]


DOCUMENTED = {200, 429, 500, 503}


def record(name: str, values: dict[str, Any]) -> None:
    """Keep a measurement for docs/reliability.md (build/measurements/wedge.json)."""
    import json

    from housing_api_testing.harness import ROOT

    path = ROOT / "build" / "measurements" / "wedge.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    found = json.loads(path.read_text()) if path.exists() else {}
    found[name] = values
    path.write_text(json.dumps(found, indent=1) + "\n")


def test_a_randomized_fault_schedule_never_hangs_a_request(own_redis: RedisServer) -> None:
    timeout_s = 1.0
    rnd = random.Random(20261129)

    async def scenario() -> tuple[list[int], dict[str, float]]:
        app, faults = faulty_app(
            redis_url=own_redis.url, request_timeout_s=timeout_s, memory_cache_rows=200, redis_timeout_ms=100
        )
        async with running_app(app) as c:
            model = faults()
            model.hang_s = 1.5
            version = app.state.service.model.version
            prefix = app.state.settings.cache_prefix
            redis = own_redis.client()
            statuses: list[int] = []
            faults_done: dict[str, int] = {}

            async def client(n: int, seed: int) -> None:
                rnd = random.Random(seed)  # each client's requests are reproducible; interleaving is not
                for _ in range(n):
                    k = rnd.random()
                    medinc = (FaultyModel.RAISE if k < 0.01 else FaultyModel.HANG if k < 0.015
                              else FaultyModel.KILL if k < 0.02 else round(rnd.uniform(1, 3), 2))  # fmt: skip
                    extra = fresh_rows(rnd.randint(0, 5), round(rnd.uniform(1, 3), 2))
                    batch = [{**ROW, "MedInc": medinc}, *extra]
                    get = rnd.random() < 0.2
                    send = c.get("/predict", params=batch[0]) if get else c.post("/predict", json=batch)
                    started = time.perf_counter()
                    r = await asyncio.wait_for(send, timeout_s + 3)  # a hang fails the test here
                    durations.append(time.perf_counter() - started)
                    statuses.append(r.status_code)

            async def chaos(clients_done: asyncio.Event) -> None:
                while not clients_done.is_set():  # faults come and go for the whole run
                    k = rnd.random()
                    row = {**ROW, "MedInc": round(rnd.uniform(1, 3), 2)}
                    if k < 0.4:
                        redis.set(row_key(prefix, version, row), rnd.choice(POISON[:9]))
                        kind = "poisoned row value"
                    elif k < 0.6:
                        redis.set(http_key(prefix, version, row), rnd.choice(GET_POISON), ex=30)
                        kind = "poisoned GET entry"
                    elif k < 0.7:
                        mode = rnd.choice(["ALL", "WRITE"])
                        redis.execute_command("CLIENT", "PAUSE", str(rnd.randint(50, 400)), mode)
                        kind = f"CLIENT PAUSE {mode}"
                    elif k < 0.75:
                        app.state.service.resolver.lookup._task.cancel()
                        kind = "lookup stage killed"
                    else:
                        kind = "quiet"
                    faults_done[kind] = faults_done.get(kind, 0) + 1
                    await asyncio.sleep(rnd.uniform(0.02, 0.15))

            async def clients(clients_done: asyncio.Event) -> None:
                await asyncio.gather(*(client(125, 20261129 + i) for i in range(1, 17)))
                clients_done.set()

            done = asyncio.Event()
            await asyncio.gather(chaos(done), clients(done))
            await asyncio.sleep(0.3)  # let the last restart and write-behind finish
            resolver = app.state.service.resolver
            state = {
                "inflight_rows": len(resolver.inflight),
                "queued": sum(len(s.queue) for s in resolver.stages),
                "admitted": app.state.service.inflight,
                "down": len(resolver.stages_down()),
                "ready": (await c.get("/readyz")).status_code,
                "after": (await c.post("/predict", json=fresh_rows(3, 9.0))).status_code,
            }
            record("randomized_fault_schedule", {
                "requests": len(statuses), "statuses": {str(k): statuses.count(k) for k in sorted(set(statuses))},
                "slowest_s": round(max(durations), 3), "p99_s": round(sorted(durations)[int(len(durations) * 0.99)], 3),
                "request_timeout_s": timeout_s, "faults": faults_done, "after": state,
            })  # fmt: skip
            return statuses, state

    durations: list[float] = []
    statuses, state = asyncio.run(scenario())
    assert len(statuses) == 2000
    assert set(statuses) <= DOCUMENTED, sorted(set(statuses))
    assert statuses.count(200) > 1500  # faults cost the requests they touch, not the service
    assert state == {"inflight_rows": 0, "queued": 0, "admitted": 0, "down": 0, "ready": 200, "after": 200}
