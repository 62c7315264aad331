"""Commands packed by hiredis (cache.with_c_packing) are byte for byte what redis-py would send."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from housing_api.cache import RedisTier, with_c_packing
from housing_api.metrics import ServiceMetrics

pytest.importorskip("hiredis", reason="hiredis is a dependency (redis[hiredis]); without it nothing changes")

COMMANDS: list[tuple[Any, ...]] = [
    ("MGET", "housing-api:abc:r1:" + "0" * 32, "k2"),
    ("EVALSHA", "f" * 40, 2, "k1", "k2", 86400, b"1.25", b"4.20150441045493"),
    ("SET", "k", b"\x00\xff binary \r\n", "EX", 60),
    ("SET", "ünïcode", "välue"),
    ("SET", "k", 1.5),  # a float: redis-py's own formatting
    ("SET", "k", b"v", "NX", True and 1),
    ("CONFIG GET", "maxmemory"),  # a two-word command name: split as redis-py splits it
    ("SET", "k", memoryview(b"view")),
]


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(map(str, c[:2]))[:40] for c in COMMANDS])
@pytest.mark.parametrize("base", [Connection, SSLConnection, UnixDomainSocketConnection])
def test_packed_bytes_equal_redis_pys(base: type[Any], args: tuple[Any, ...]) -> None:
    packed = with_c_packing(base)()
    assert isinstance(packed, base)
    assert b"".join(packed.pack_command(*args)) == b"".join(base().pack_command(*args))


@pytest.mark.parametrize(
    ("url", "base"),
    [("redis://127.0.0.1:1/0", Connection), ("rediss://127.0.0.1:1/0", SSLConnection),
     ("unix:///tmp/none.sock", UnixDomainSocketConnection)],
)  # fmt: skip
def test_the_redis_tier_uses_it_for_every_scheme(url: str, base: type[Any]) -> None:
    from prometheus_client import CollectorRegistry

    tier = RedisTier(url, 0.05, 60, 1.0, ServiceMetrics(CollectorRegistry()))
    cls = tier.client.connection_pool.connection_class
    assert issubclass(cls, base) and cls.pack_command is not base.pack_command
