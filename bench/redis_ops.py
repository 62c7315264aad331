"""Micro-benchmark: what one micro-batch's Redis lookup and write-behind cost per row, by method.

    .venv/bin/python bench/redis_ops.py [--rows 50,500] [--seconds 1.0]

Against its own throwaway redis-server, with redis-py's asyncio client (hiredis parses replies
when installed), as the service uses it. For each method and batch size: the median wall time of
one round trip and the client's CPU time (process_time, the part the service's event loop pays),
both per row. The writes store what the service stores: key = namespace + 32 hex digits, value =
repr(float), TTL one hour. Not a test: nothing here asserts a duration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from redis.utils import HIREDIS_AVAILABLE

ROOT = Path(__file__).resolve().parents[1]
from housing_api.cache import SET_EX_SCRIPT  # noqa: E402  (the script the service sends)
from housing_api_testing.harness import RedisServer  # noqa: E402  (the one process harness)

TTL = 3600
Items = list[tuple[bytes, bytes]]


def items(n: int, rng: random.Random) -> Items:
    return [(f"housing:a7f2280e79f4d97e:{rng.getrandbits(128):032x}".encode(), repr(rng.random() * 5).encode())
            for _ in range(n)]  # fmt: skip


def bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def packed_set_ex(batch: Items) -> bytes:
    """N times SET key value EX ttl in RESP, built in one pass (what redis-py builds one arg at a time)."""
    ttl = bulk(str(TTL).encode())
    return b"".join(b"*5\r\n$3\r\nSET\r\n" + bulk(k) + bulk(v) + b"$2\r\nEX\r\n" + ttl for k, v in batch)


def packed_evalsha(sha: bytes, batch: Items) -> bytes:
    n = len(batch)
    head = b"*%d\r\n$7\r\nEVALSHA\r\n" % (4 + 2 * n) + bulk(sha) + bulk(str(n).encode())
    return b"".join([head, *(bulk(k) for k, _ in batch), bulk(str(TTL).encode()), *(bulk(v) for _, v in batch)])


def packed_mget(keys: list[bytes]) -> bytes:
    return b"*%d\r\n$4\r\nMGET\r\n" % (1 + len(keys)) + b"".join(bulk(k) for k in keys)


class Methods:
    def __init__(self, client: aioredis.Redis, sha: str) -> None:
        self.client = client
        self.sha = sha

    async def pipeline_set_ex(self, batch: Items) -> None:
        """What the service does today: one pipeline of SET key value EX ttl."""
        async with self.client.pipeline(transaction=False) as pipe:
            for k, v in batch:
                pipe.set(k, v, ex=TTL)
            await pipe.execute()

    async def mset_then_expire(self, batch: Items) -> None:
        """MSET for the values, then one EXPIRE per key, in one pipeline."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.mset(dict(batch))
            for k, _ in batch:
                pipe.expire(k, TTL)
            await pipe.execute()

    async def script_set_ex(self, batch: Items) -> None:
        """One EVALSHA: the server loops SET ... EX over KEYS; one reply."""
        await self.client.evalsha(self.sha, len(batch), *(k for k, _ in batch), TTL, *(v for _, v in batch))  # type: ignore[misc]

    async def _raw(self, payload: bytes, replies: int) -> list[object]:
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(payload, check_health=False)
            return [await conn.read_response() for _ in range(replies)]
        finally:
            await pool.release(conn)

    async def packed_pipeline_set_ex(self, batch: Items) -> None:
        """The same N SET EX commands, packed by hand into one write."""
        await self._raw(packed_set_ex(batch), len(batch))

    async def packed_script_set_ex(self, batch: Items) -> None:
        """The same EVALSHA, packed by hand: one write, one reply."""
        await self._raw(packed_evalsha(self.sha.encode(), batch), 1)

    async def mget(self, batch: Items) -> None:
        """The lookup the service does today: one MGET."""
        await self.client.mget([k for k, _ in batch])

    async def packed_mget(self, batch: Items) -> None:
        """The same MGET, packed by hand."""
        await self._raw(packed_mget([k for k, _ in batch]), 1)


async def per_row(
    call: Callable[[Items], Awaitable[object]], batches: list[Items], seconds: float
) -> tuple[float, float]:
    """Median wall µs per row and client CPU µs per row, over as many round trips as fit."""
    walls: list[float] = []
    cpu_start, i = time.process_time(), 0
    deadline = time.perf_counter() + seconds
    while len(walls) < 20 or time.perf_counter() < deadline:
        batch = batches[i % len(batches)]
        i += 1
        started = time.perf_counter()
        await call(batch)
        walls.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu_start
    n = len(batches[0])
    return statistics.median(walls) / n * 1e6, cpu / len(walls) / n * 1e6


async def run(url: str, sizes: list[int], seconds: float) -> None:
    client = aioredis.Redis.from_url(url)
    sha = await client.script_load(SET_EX_SCRIPT)
    methods = Methods(client, sha)
    rng = random.Random(1)
    print(f"redis-py with hiredis: {HIREDIS_AVAILABLE}; load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'method':28} {'rows':>5} {'wall µs/row':>12} {'client CPU µs/row':>18}")
    for n in sizes:
        batches = [items(n, rng) for _ in range(64)]
        for name in ("pipeline_set_ex", "mset_then_expire", "script_set_ex", "packed_pipeline_set_ex",
                     "packed_script_set_ex", "mget", "packed_mget"):  # fmt: skip
            await methods.pipeline_set_ex(batches[0])  # warm the connection and the keys
            wall, cpu = await per_row(getattr(methods, name), batches, seconds)
            print(f"{name:28} {n:>5} {wall:>12.2f} {cpu:>18.2f}", flush=True)
    # Every method stored the same thing: check one key from the last batch.
    k, v = batches[-1][-1]
    assert await client.get(k) == v and 0 < await client.ttl(k) <= TTL
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="50,500", help="rows per micro-batch, comma-separated")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per cell")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            asyncio.run(run(server.url, [int(n) for n in args.rows.split(",")], args.seconds))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
