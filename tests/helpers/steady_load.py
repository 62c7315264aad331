"""A steady load from a test client, and the shared tier's hit ratio seen window by window.

For the failover tests (Sentinel and Cluster): workers post batches of a fixed set of rows to an app
running in the test's event loop, every answer is recorded (status, latency, predictions), and the
app's own counters give the Redis hit ratio of each window, so a test can say how long the shared
tier was degraded and how many rows the model answered instead.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI

from housing_api.schemas import SAMPLE_BATCH

ROW = SAMPLE_BATCH[0]


def distinct_rows(n: int) -> list[dict[str, float]]:
    return [{**ROW, "MedInc": 1 + i / 997} for i in range(n)]


def counter(app: FastAPI, name: str, labels: dict[str, str]) -> float:
    return app.state.metrics.registry.get_sample_value(name, labels) or 0.0


@dataclass
class Window:
    at: float
    hits: float
    lookups: float
    model_rows: float


@dataclass
class SteadyLoad:
    """`workers` clients posting `batch` random rows of `rows`, back to back, until stopped."""

    client: httpx.AsyncClient
    app: FastAPI
    rows: list[dict[str, float]]
    workers: int = 4
    batch: int = 8
    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    answers: dict[float, set[float]] = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> SteadyLoad:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.workers)]
        self._tasks.append(asyncio.create_task(self._sample()))
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _worker(self, seed: int) -> None:
        pick = random.Random(seed)
        while not self._stop.is_set():
            body = pick.sample(self.rows, self.batch)
            started = time.monotonic()
            response = await self.client.post("/predict", json=body, timeout=60)
            self.latencies.append(time.monotonic() - started)
            self.statuses.append(response.status_code)
            if response.status_code == 200:
                for row, value in zip(body, response.json()["prediction"], strict=True):
                    self.answers.setdefault(row["MedInc"], set()).add(value)

    async def _sample(self, every_s: float = 0.2) -> None:
        while not self._stop.is_set():
            self.windows.append(self._now())
            await asyncio.sleep(every_s)

    def _now(self) -> Window:
        lookups = sum(
            counter(self.app, "housing_api_cache_lookups_total", {"tier": "redis", "outcome": o})
            for o in ("hit", "miss", "error", "invalid")
        )
        hits = counter(self.app, "housing_api_cache_lookups_total", {"tier": "redis", "outcome": "hit"})
        model = counter(self.app, "housing_api_rows_served_total", {"source": "model"})
        return Window(time.monotonic(), hits, lookups, model)

    def hit_ratio(self, over_s: float = 0.6) -> float:
        """The Redis hit ratio of the last `over_s` seconds (0 when nothing was looked up)."""
        if not self.windows:
            return 0.0
        last = self._now()
        first = next((w for w in self.windows if w.at >= last.at - over_s), self.windows[0])
        lookups = last.lookups - first.lookups
        return (last.hits - first.hits) / lookups if lookups else 0.0

    def model_rows(self) -> float:
        return self._now().model_rows

    async def until(self, ready: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Seconds until `ready()` holds (checked every 0.1 s while the load runs); AssertionError past timeout_s."""
        started = time.monotonic()
        # In a thread: a check may talk to Redis synchronously, which must not stall the load.
        while not await asyncio.to_thread(ready):
            if time.monotonic() - started > timeout_s:
                raise AssertionError(f"{what}: not within {timeout_s} s (hit ratio {self.hit_ratio():.2f})")
            await asyncio.sleep(0.1)
        return time.monotonic() - started
