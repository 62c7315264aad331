"""Redis memory per cached row, measured: real rows written the way the service writes them.

    .venv/bin/python bench/redis_memory.py [--rows 100000]

For standalone Redis (one server, the write-behind's EVALSHA) and Redis Cluster (3 masters, the
per-master pipelines of redis_cluster.py), each a throwaway server from the test harness with the
service's flags (allkeys-lru, no persistence): `INFO memory` used_memory before and after writing
`--rows` distinct rows (the committed model's predictions, keys from keys.py, TTL one hour), divided
by the rows. Prints one line per mode; docs/capacity.md quotes them. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from prometheus_client import CollectorRegistry  # noqa: E402

from housing_api.cache import VALUE_ENCODING, RedisTier, encode_value  # noqa: E402
from housing_api.keys import canonical_row, key_namespace, row_digest, rows_matrix  # noqa: E402
from housing_api.metrics import ServiceMetrics  # noqa: E402
from housing_api.model import load_model  # noqa: E402
from housing_api.redis_cluster import ClusterTier  # noqa: E402
from housing_api.schemas import SAMPLE_BATCH  # noqa: E402
from housing_api_testing.harness import RedisClusterNodes, RedisServer  # noqa: E402  (the one process harness)

BATCH = 500


def real_items(n: int) -> list[tuple[str, bytes]]:
    model = load_model(ROOT / "model" / "model.joblib")
    rows = [
        canonical_row({**SAMPLE_BATCH[i % 4], "MedInc": 0.5 + i / n * 14, "HouseAge": 1 + i % 52}) for i in range(n)
    ]
    namespace = key_namespace("housing", model.version, VALUE_ENCODING)
    predictions = model.predict(rows_matrix(rows)).tolist()
    return [(namespace + row_digest(r), encode_value(p)) for r, p in zip(rows, predictions, strict=True)]


async def fill(tier: RedisTier, items: list[tuple[str, bytes]]) -> None:
    for i in range(0, len(items), BATCH):
        assert await tier.set_many(items[i : i + BATCH])
    await tier.close()


def used(servers: list[RedisServer]) -> int:
    return sum(int(s.client().info("memory")["used_memory"]) for s in servers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    n = parser.parse_args().rows
    items = real_items(n)
    metrics = ServiceMetrics(CollectorRegistry())
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "standalone", "--maxmemory-policy", "allkeys-lru")
        (Path(tmp) / "standalone").mkdir()
        server.start()
        try:
            before = used([server])
            asyncio.run(fill(RedisTier(server.url, 2.0, 3600, 1.0, metrics), items))
            print(f"standalone: {(used([server]) - before) / n:.0f} B per row over {n} rows")
        finally:
            server.stop()
        cluster = RedisClusterNodes(Path(tmp) / "cluster", masters=3, replicas=0).start()
        try:
            masters = cluster.masters()
            before = used(masters)
            seeds = [("127.0.0.1", cluster.nodes[0].port)]
            asyncio.run(fill(ClusterTier(seeds, 2.0, 3600, 1.0, metrics), items))
            held = [m.client().dbsize() for m in masters]
            print(
                f"cluster (3 masters): {(used(masters) - before) / n:.0f} B per row over {n} rows; rows per master {held}"
            )
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
