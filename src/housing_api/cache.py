"""The cache tiers: a bounded in-process LRU and Redis.

A Redis failure is a miss, never an error for the client: it is counted by reason, logged once per
outage or burst (not once per request), and only an outage (unreachable, timing out, refusing our
credentials) makes Redis skipped for REDIS_RETRY_INTERVAL_S before it is tried again, so a dead
Redis costs one timeout per interval rather than one per request. A Redis that answers with an
error (READONLY, OOM, WRONGTYPE, ...) stays in use: redis_faults.py says which is which.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from housing_api.config import redact_urls
from housing_api.metrics import GET, PING, SET, RedisOp, ServiceMetrics
from housing_api.redis_channel import Channel
from housing_api.redis_faults import OUTAGES, TIMEOUT, WRITES_REFUSED, BurstLog, classify
from housing_api.redis_sentinel import sentinel_master as sentinel_master_client

try:
    from housing_api import _resp
except ImportError:  # no C compiler at install time: hiredis' packer, else redis-py's
    _resp = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
WRITE_TIMEOUT_S = 2.0
"""Bound of one write-behind round trip (off the request path)."""
REFUSED_HOLD_S = 60.0
"""How long a refused write (READONLY, OOM) keeps /readyz saying so without another refusal."""
SET_EX_SCRIPT = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""
"""The write-behind of one micro-batch as one command: SET key value EX ttl for every key.

A pipeline of N SET commands costs redis-py about 16 µs of event-loop time per row to pack and
parse in Python; one EVALSHA with N keys and N values costs about 2 to 4 µs per row, and Redis
answers once (bench/redis_ops.py, docs/benchmarks.md). Keys are passed as KEYS, as Redis asks of
scripts. A server that refuses scripts gets the pipeline instead (RedisTier._set_ex)."""
SET_EX_SHA = hashlib.sha1(SET_EX_SCRIPT.encode()).hexdigest()
"""The script's name for EVALSHA: Redis names a script by the SHA-1 of its text."""
K = TypeVar("K")
V = TypeVar("V")


class MemoryTier(Generic[K, V]):
    """A bounded least-recently-used map; capacity 0 stores nothing."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        if self.capacity <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.capacity:
            self._data.popitem(last=False)

    # A batch at a time: what get and put do for each key, without a method call per key.
    def get_many(self, keys: Sequence[K], values: list[V]) -> list[int]:
        """values[i] = the value of keys[i] for each key held; returns the positions of the others."""
        data = self._data
        get, used = data.get, data.move_to_end
        missing: list[int] = []
        for i, key in enumerate(keys):
            value = get(key)
            if value is None:
                missing.append(i)
            else:
                values[i] = value
                used(key)
        return missing

    def put_many(self, items: Sequence[tuple[K, V]]) -> None:
        """put(key, value) for each, in order."""
        if self.capacity <= 0:
            return
        data = self._data
        used = data.move_to_end
        for key, value in items:
            data[key] = value
            used(key)
        for _ in range(len(data) - self.capacity):
            data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()


VALUE_ENCODING = "r1"
"""Tag of the value encoding below; keys carry it (keys.key_namespace), so a release that changes
the encoding reads none of the old values instead of misreading them."""


def encode_value(value: float) -> bytes:
    """The shortest decimal text that reads back as exactly this float, readable in redis-cli:
    orjson's, whose digits are repr()'s, and so is its spelling for every value from 1e-4 up to
    1e16 (below 1e-4 orjson writes 0.0000x or 1e-5 where repr wrote 1e-05: an old value spelled
    so fails decode_value's check and is recomputed, never misread, so VALUE_ENCODING stays).
    repr() cost ~7,000 instructions per float (docs/benchmarks.md, issue 26)."""
    return orjson.dumps(value)


def encode_values(values: Sequence[float]) -> list[bytes]:
    """encode_value of each, from one orjson call: a micro-batch's write-behind."""
    return orjson.dumps(values)[1:-1].split(b",") if values else []


def decode_value(raw: bytes) -> float | None:
    """The cached prediction, or None for anything encode_value would not have written: text,
    empty, NaN, +-Infinity, 1e999, JSON, a huge string. Redis is shared infrastructure, so its
    values are input, not truth; None is used as a miss and the row is recomputed and rewritten."""
    if not raw or len(raw) > 32:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    # The exact bytes encode_value gives for this float: rejects inf/nan and every other spelling.
    return value if math.isfinite(value) and encode_value(value) == raw else None


class RedisTier:
    """The shared tier. get_many/set_many never raise: failures become misses."""

    def __init__(
        self, url: str, timeout_s: float, ttl_s: int, retry_interval_s: float, metrics: ServiceMetrics,
        connection: Mapping[str, Any] | None = None, sentinel_master: str | None = None,
    ) -> None:  # fmt: skip
        self._init_state(timeout_s, ttl_s, retry_interval_s, metrics)
        client_kwargs = self.client_kwargs(connection)
        self._sentinels: Sentinel | None = None
        self.client: aioredis.Redis
        if sentinel_master is not None:
            self.client, self._sentinels = sentinel_master_client(url, sentinel_master, client_kwargs)
        else:
            self.client = aioredis.Redis.from_url(url, **client_kwargs)
        pool = self.client.connection_pool
        pool.connection_class = with_c_packing(pool.connection_class)
        # The lookup and write-behind stages each send one command per micro-batch on a connection
        # of their own (redis_channel.py); anything else goes through the client's pool.
        self._reads = Channel(self.client)
        self._writes = Channel(self.client)
        self._scripting = True

    def _init_state(self, timeout_s: float, ttl_s: int, retry_interval_s: float, metrics: ServiceMetrics) -> None:
        """What every mode keeps: the bounds, and whether Redis is in use (the fault handling below)."""
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.retry_interval_s = retry_interval_s
        self.metrics = metrics
        # No client-side retries: the service's answer is to skip the cache, not to wait for it.
        # Reads on the request path are bounded by asyncio.timeout(timeout_s); the socket timeout
        # is the longer write bound, because writes are write-behind and off the request path.
        self.write_timeout_s = max(timeout_s, WRITE_TIMEOUT_S)
        self._down_until = 0.0
        self._degraded = False
        self._down_reason: str | None = None
        self._refused: str | None = None
        self._refused_at = 0.0
        self._burst = BurstLog(log)

    def client_kwargs(self, connection: Mapping[str, Any] | None) -> dict[str, Any]:
        """redis-py connection settings of every mode: the bounds, no retries, and the credentials
        and TLS from their own settings (config.Settings.redis_connection), never the URL."""
        return {
            "socket_timeout": self.write_timeout_s,
            "socket_connect_timeout": self.timeout_s,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
            **(connection or {}),
        }

    @property
    def degraded(self) -> bool:
        return self._degraded

    def usable(self) -> bool:
        """False while backing off after a failure."""
        return not self._degraded or time.monotonic() >= self._down_until

    def state(self) -> tuple[str, str | None]:
        """(what /readyz calls the cache, the reason label): ok; degraded (an outage: unreachable,
        timeout, noauth); readonly or full (writes refused in the last REFUSED_HOLD_S, reads work)."""
        if self._degraded:
            return "degraded", self._down_reason
        if self._refused is not None and time.monotonic() - self._refused_at < REFUSED_HOLD_S:
            return WRITES_REFUSED[self._refused], self._refused
        return "ok", None

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.client.ping()
        except Exception as exc:
            return not self._failed(PING, exc)
        self._succeeded()
        return True

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None] | None:
        """One MGET; None when Redis is unavailable (the caller treats every key as a miss)."""
        if not keys or not self.usable():
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                values: list[bytes | None] = list(await self._reads.execute("MGET", *keys))
        except Exception as exc:  # a cache failure is a miss, whatever its kind
            self._failed(GET, exc)
            return None
        self._succeeded()
        return values

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_s: int | None = None) -> bool:
        """One round trip that sets every key with its TTL (SET_EX_SCRIPT, else a pipeline)."""
        if not items or not self.usable():
            return False
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await self._set_ex(items, ttl_s or self.ttl_s)
        except Exception as exc:
            # A slow write (Redis busy, or pausing writes during a failover) is not an outage: it is
            # counted and Redis stays in use for reads. A refused one (READONLY, OOM) is said.
            self._failed(SET, exc, timeout_is_outage=False)
            return False
        self._refused = None
        self._succeeded()
        return True

    async def _set_ex(self, items: Sequence[tuple[str, bytes]], ttl_s: int) -> None:
        if self._scripting:
            try:
                await self._eval_set_ex(items, ttl_s)
                return
            except (NoPermissionError, ResponseError) as exc:
                if not _scripting_refused(exc):
                    raise
                # A proxy or an ACL that refuses scripts: pipelines from now on, said once.
                self._scripting = False
                log.warning("Redis refuses scripts (%s); writing cached rows with pipelined SET instead", exc)
        async with self.client.pipeline(transaction=False) as pipe:
            for key, value in items:
                pipe.set(key, value, ex=ttl_s)
            await pipe.execute()

    async def _eval_set_ex(self, items: Sequence[tuple[str, bytes]], ttl_s: int) -> None:
        keys, values = zip(*items, strict=True)  # two tuples in C, not a generator step per row
        args = ("EVALSHA", SET_EX_SHA, len(items), *keys, ttl_s, *values)
        try:
            await self._writes.execute(*args)
        except NoScriptError:
            # A restarted or flushed Redis has forgotten the script: load it, then send it again.
            await self._writes.execute("SCRIPT", "LOAD", SET_EX_SCRIPT)
            await self._writes.execute(*args)

    async def get_with_ttl(self, key: str) -> tuple[int, bytes | None]:
        """For the fastapi-cache2 backend: value and remaining TTL in one round trip."""
        if not self.usable():
            return 0, None
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.ttl(key)
                    pipe.get(key)
                    # A WRONGTYPE reply (another type under this key) comes back as a value, not
                    # raised: it is a miss, and the response's write-behind SET replaces the key.
                    ttl, value = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            self._failed(GET, exc)
            return 0, None
        if isinstance(value, Exception) or isinstance(ttl, Exception):
            self._failed(GET, value if isinstance(value, Exception) else ttl)
            return 0, None
        self._succeeded()
        return max(int(ttl), 0), value

    async def close(self) -> None:
        await self._reads.close()
        await self._writes.close()
        await self.client.aclose()
        if self._sentinels is not None:
            await self._sentinels.aclose()

    def _failed(self, op: RedisOp, exc: BaseException, *, timeout_is_outage: bool = True) -> bool:
        """Count and say the failure by its reason; True when it is an outage (Redis out of use)."""
        reason = classify(exc)
        self.metrics.redis_errors.labels(op, reason).inc()
        if reason in OUTAGES and (reason != TIMEOUT or timeout_is_outage):
            self._outage(reason, exc)
            return True
        if reason in WRITES_REFUSED and op == SET:
            self._refused, self._refused_at = reason, time.monotonic()
            self._burst.warning(
                reason, "Redis refuses writes (%s: %s); the shared cache tier is not filling, reads go on",
                reason, redact_urls(str(exc)),
            )  # fmt: skip
        else:
            message = redact_urls(str(exc))
            self._burst.warning(reason, "Redis %s failed (%s: %s); treated as a miss", op, reason, message)
        if reason != TIMEOUT:
            self._succeeded()  # it answered: reachable, whatever it said
        return False

    def _outage(self, reason: str, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.retry_interval_s
        self._down_reason = reason
        if not self._degraded:
            self._degraded = True
            self.metrics.redis_up.set(0)
            log.warning(
                "Redis unavailable (%s, %s: %s); serving from the model and the in-process tier, "
                "retrying every %.1fs", reason, type(exc).__name__, redact_urls(str(exc)), self.retry_interval_s,
            )  # fmt: skip

    def _succeeded(self) -> None:
        if self._degraded:
            self._degraded = False
            self._down_reason = None
            log.warning("Redis reachable again; the shared cache tier is back in use")
        self.metrics.redis_up.set(1)


def with_c_packing(connection_class: type[Any]) -> type[Any]:
    """The connection class (plain, TLS or unix socket) packing commands in C.

    redis-py's asyncio connections pack every command in Python (its sync client already uses
    hiredis). A micro-batch's MGET and EVALSHA carry one or two arguments per row, so packing is
    event-loop time that grows with the batch. `_resp.pack` writes the command in one pass; without
    it (installed without a C compiler) hiredis' packer, which formats each argument with sprintf,
    and without either redis-py's own (how much each costs: docs/benchmarks.md, "hiredis' C packer"
    and issue 26's batch path). Arguments that would be packed differently from redis-py (floats,
    bools, memoryviews) and multi-word command names keep redis-py's own packing."""
    if _resp is not None:
        return _packing(connection_class, _resp.pack)
    try:
        from hiredis import pack_command
    except ImportError:
        return connection_class

    def hiredis_pack(args: tuple[Any, ...]) -> bytes | None:
        return pack_command(args) if all(type(a) in _C_PACKED for a in args) else None

    return _packing(connection_class, hiredis_pack)


def _packing(connection_class: type[Any], packer: Callable[[tuple[Any, ...]], bytes | None]) -> type[Any]:
    """connection_class with `packer`'s bytes for a command, or its own where `packer` gives None."""

    def pack(self: Any, *args: Any) -> list[bytes]:
        packed = packer(args) if " " not in args[0] else None
        if packed is not None:
            return [packed]
        own: list[bytes] = connection_class.pack_command(self, *args)
        return own

    return type(f"CPacked{connection_class.__name__}", (connection_class,), {"pack_command": pack})


_C_PACKED = (str, bytes, int)


def _scripting_refused(exc: BaseException) -> bool:
    """EVALSHA not allowed here (ACL) or not a command here (renamed, or a proxy without it). An ACL
    that refuses the keys (NOPERM "... access one of the keys") refuses a pipeline's SETs as well."""
    message = str(exc).lower()
    if isinstance(exc, NoPermissionError):
        return "'evalsha'" in message or "'script" in message
    return "unknown command" in message
