"""Commands packed in C (cache.with_c_packing: _resp.c, else hiredis) are byte for byte what redis-py would send."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from housing_api import cache
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
    ("EXPIRE", "k", -1),
    ("SET", "k", 0),
    ("SET", "k", 2**63 - 1),
    ("SET", "k", -(2**63)),
    ("SET", "k", 2**64),  # past 64 bits: redis-py's own formatting
    ("SET", "", b""),
    ("SET", "k", "\ud800"),  # does not encode: redis-py says so, as before
    ("MGET", *(f"k{i}" for i in range(1000))),
]
PACKERS = ["resp", "hiredis"]


@pytest.fixture(params=PACKERS)
def packer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each packer with_c_packing can choose: _resp.pack, and hiredis' where _resp is not built."""
    if request.param == "resp" and cache._resp is None:
        pytest.skip("housing_api._resp is not built")
    if request.param == "hiredis":
        monkeypatch.setattr(cache, "_resp", None)
    return str(request.param)


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(map(str, c[:2]))[:40] for c in COMMANDS])
@pytest.mark.parametrize("base", [Connection, SSLConnection, UnixDomainSocketConnection])
def test_packed_bytes_equal_redis_pys(base: type[Any], args: tuple[Any, ...], packer: str) -> None:
    packed = with_c_packing(base)()
    assert isinstance(packed, base)
    try:
        expected = b"".join(base().pack_command(*args))
    except Exception as exc:  # redis-py refuses it: so does the packed connection, the same way
        with pytest.raises(type(exc)):
            packed.pack_command(*args)
        return
    assert b"".join(packed.pack_command(*args)) == expected


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


def _lru(capacity: int, ops: list[tuple[str, list[int]]], batched: bool) -> tuple[list[int | None], list[int]]:
    """Run gets and puts of keys (value = key * 10) one by one or a batch at a time: what each get
    found, and the keys held at the end, least recently used first."""
    from housing_api.cache import MemoryTier

    tier: MemoryTier[int, int] = MemoryTier(capacity)
    found: list[int | None] = []
    for op, keys in ops:
        if op == "put" and batched:
            tier.put_many([(k, k * 10) for k in keys])
        elif op == "put":
            for k in keys:
                tier.put(k, k * 10)
        elif batched:
            values: list[int | None] = [None] * len(keys)
            tier.get_many(keys, values)  # type: ignore[arg-type]
            found += values
        else:
            found += [tier.get(k) for k in keys]
    return found, list(tier._data)


@pytest.mark.parametrize("capacity", [0, 1, 3, 8, 100])
def test_the_memory_tier_a_batch_at_a_time_is_the_same_lru_as_key_by_key(capacity: int) -> None:
    import random

    rng = random.Random(capacity)
    ops = [(rng.choice(["get", "put"]), [rng.randrange(12) for _ in range(rng.randrange(1, 9))]) for _ in range(300)]
    ops = [(op, list(dict.fromkeys(keys))) for op, keys in ops]  # a micro-batch's rows are distinct
    assert _lru(capacity, ops, batched=True) == _lru(capacity, ops, batched=False)


def test_get_many_returns_the_positions_it_did_not_find() -> None:
    from housing_api.cache import MemoryTier

    tier: MemoryTier[str, float] = MemoryTier(10)
    tier.put_many([("a", 1.0), ("c", 3.0)])
    values = [0.0] * 4
    assert tier.get_many(["a", "b", "c", "d"], values) == [1, 3]
    assert values == [1.0, 0.0, 3.0, 0.0]
