"""`make bench-inprocess`: CPU and cyclic-GC time per request of the service's own path, no HTTP.

The service's lifespan objects (model, Redis tier on a throwaway redis-server, resolver, validator)
answer POST bodies through PredictionService.predict_body from CONCURRENCY tasks at once, as the
routes would, while the process's CPU time and the garbage collector's pauses are summed. What the
HTTP stack costs is left out, so a change to the resolver, the keys or the Redis tier shows here
without the noise of a load generator. Run it with another checkout's interpreter to compare builds:

    <other checkout>/.venv/bin/python bench/inprocess.py --rows 100 --requests 3000

A benchmark, not a test: nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
from housing_api.app import _start  # noqa: E402
from housing_api.config import Settings  # noqa: E402
from housing_api.metrics import ServiceMetrics  # noqa: E402
from housing_api.schemas import BatchValidator  # noqa: E402
from housing_api_testing.harness import RedisServer  # noqa: E402  (shared with the tests)

POOL = 1000


def bodies(rows: int, n: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """The pool's one-row warm-up bodies, and n bodies whose even rows repeat the pool and whose odd
    rows are new (every row new with --rows 1)."""
    rng = random.Random(seed)
    pool = [{"MedInc": round(rng.uniform(1, 10), 4), "HouseAge": rng.randint(1, 50),
             "AveRooms": round(rng.uniform(2, 8), 3), "AveBedrms": 1.02, "Population": rng.randint(100, 3000),
             "AveOccup": 2.55, "Latitude": 37.88, "Longitude": -122.23} for _ in range(POOL)]  # fmt: skip
    fresh = iter(range(10**6, 10**9))
    out = []
    for _ in range(n):
        batch = [dict(rng.choice(pool)) for _ in range(rows)]
        for i, row in enumerate(batch):
            if i % 2 or rows == 1:
                row["Population"] = next(fresh)
        out.append(orjson.dumps(batch))
    return [orjson.dumps([row]) for row in pool], out


async def measure(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    settings = Settings(redis_url=redis_url, model_path=ROOT / "model" / "model.joblib")  # type: ignore[call-arg]
    metrics = ServiceMetrics(CollectorRegistry())
    service, redis = await _start(settings, metrics, BatchValidator(settings.max_batch_rows), None)
    warm, work = bodies(args.rows, args.requests, args.seed)
    for body in warm:
        await service.predict_body(body)
    gc.collect()
    gc.freeze()  # as the app's lifespan does after startup
    paused = [0.0, 0.0]  # start of the current collection, total

    def on_gc(phase: str, _: dict[str, Any]) -> None:
        if phase == "start":
            paused[0] = time.perf_counter()
        else:
            paused[1] += time.perf_counter() - paused[0]

    queue = iter(work)

    async def client() -> None:
        for body in queue:
            await service.predict_body(body)

    gc.callbacks.append(on_gc)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(args.concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    gc.callbacks.remove(on_gc)
    await service.resolver.stop(2.0)
    if redis is not None:
        await redis.close()
    n = args.requests
    return {"rows": args.rows, "requests": n, "cpu_us": cpu / n * 1e6, "wall_us": wall / n * 1e6,
            "gc_us": paused[1] / n * 1e6}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100, help="rows per request (odd positions new; 1: all new)")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes' worth of runs, one after another")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = RedisServer(Path(tmp)).start()
        try:
            for run in range(args.runs):
                redis_server.client().flushall()  # our own throwaway server, never a shared one
                r = asyncio.run(measure(args, redis_server.url))
                print(f"run {run + 1}: {r['rows']}-row requests x {r['requests']}: {r['cpu_us']:.0f} µs CPU, "
                      f"{r['wall_us']:.0f} µs wall, {r['gc_us']:.0f} µs in cyclic GC per request", flush=True)  # fmt: skip
        finally:
            redis_server.stop()


if __name__ == "__main__":
    main()
