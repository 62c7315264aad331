"""Client CPU per row of a micro-batch's Redis lookup and write-behind: standalone against Cluster.

    .venv/bin/python bench/redis_modes.py [--rows 50] [--batches 400]

The service's own tiers (RedisTier: one MGET and one EVALSHA per micro-batch; ClusterTier: one
pipeline per master, an MGET per slot and a SET per row) against throwaway servers from the test
harness (one server; a 3-master Cluster without replicas), all on this machine. Prints the event
loop's CPU time (process_time) per row for reads (every key present) and writes. A shared machine
makes the absolute figures noisy; the ratio between the modes is the point. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from prometheus_client import CollectorRegistry  # noqa: E402

from housing_api.cache import RedisTier  # noqa: E402
from housing_api.metrics import ServiceMetrics  # noqa: E402
from housing_api.redis_cluster import ClusterTier  # noqa: E402
from housing_api_testing.harness import RedisClusterNodes, RedisServer  # noqa: E402  (the one process harness)


async def per_row(tier: RedisTier, rows: int, batches: int) -> tuple[float, float]:
    rng = random.Random(7)
    data = [[(f"housing:a7f2280e79f4d97e:r1:{rng.getrandbits(128):032x}", b"2.5") for _ in range(rows)]
            for _ in range(batches)]  # fmt: skip
    await tier.set_many(data[0])  # connect, load the script
    started = time.process_time()
    for batch in data:
        assert await tier.set_many(batch)
    writes = (time.process_time() - started) / (rows * batches)
    started = time.process_time()
    for batch in data:
        assert None not in (await tier.get_many([k for k, _ in batch]) or [None])
    reads = (time.process_time() - started) / (rows * batches)
    await tier.close()
    return reads, writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--batches", type=int, default=400)
    args = parser.parse_args()
    metrics = ServiceMetrics(CollectorRegistry())
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "one").mkdir()
        server = RedisServer(Path(tmp) / "one").start()
        cluster = RedisClusterNodes(Path(tmp) / "cluster", masters=3, replicas=0).start()
        try:
            seeds = [("127.0.0.1", cluster.nodes[0].port)]
            for name, tier in (
                ("standalone", RedisTier(server.url, 2.0, 3600, 1.0, metrics)),
                ("cluster (3 masters)", ClusterTier(seeds, 2.0, 3600, 1.0, metrics)),
            ):
                reads, writes = asyncio.run(per_row(tier, args.rows, args.batches))
                print(f"{name}: {reads * 1e6:.1f} µs per row read, {writes * 1e6:.1f} µs per row written "
                      f"(client CPU, {args.rows}-row micro-batches)")  # fmt: skip
        finally:
            cluster.stop()
            server.stop()


if __name__ == "__main__":
    main()
