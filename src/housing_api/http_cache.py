"""fastapi-cache2 for GET /predict, with its known limits designed around.

- FastAPICache is configured on a class, process-wide, and `FastAPICache.init` ignores every call
  after the first. So nothing per-app is configured there: the one backend registered is a proxy
  that forwards to the backend of the app serving the current request (a ContextVar that
  `stable_etag` sets from the app's own); the key builder uses that backend's key prefix (the app's
  own CACHE_PREFIX) and ignores the class-level prefix; the TTL is the
  app's HTTP_CACHE_MAX_AGE held by its backend (0 turns the response cache off), whatever expiry
  the class holds. Several apps in one process (tests) never share or overwrite each other's cache.
- An entry read back is input, not truth: it is used only if it is the JSON of a complete, valid
  response for the row and model version its key names; anything else is a miss (counted as
  outcome="invalid"), and the recomputed response replaces it.
- A miss's write to Redis happens in the background (bounded), as the POST path's write-behind.
- The route returns (body, row-cache status); RowResponseCoder stores the body alone, so the
  status reaches `stable_etag` as a value, and an entry is the same bytes as before.
- Its ETag is `hash()` of the cached bytes: Python salts hash() per process, so two pods would give
  one response two ETags. `stable_etag` replaces it with a digest of the response body and answers
  If-None-Match itself.
- Its default key is built from repr() of the arguments; ours is the canonical row digest plus the
  model version, so a new model never serves an old model's response.
- It has no stampede protection; the handler it wraps goes through the resolver, whose
  single-flight computes concurrent identical misses once.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import orjson
from fastapi_cache.backends import Backend
from fastapi_cache.coder import JsonCoder
from starlette.requests import Request
from starlette.responses import Response

from housing_api import FEATURES
from housing_api.cache import MemoryTier, RedisTier
from housing_api.keys import canonical_row, row_digest, row_values
from housing_api.metrics import HTTP, INVALID, ServiceMetrics

ENCODING = "j1"
"""Tag of the cached response's encoding (fastapi-cache2's JsonCoder) in the key."""
MAX_PENDING_WRITES = 1000

_current: ContextVar[HttpCacheBackend | None] = ContextVar("housing_api_http_cache", default=None)


class HttpCacheBackend(Backend):
    """Whole GET responses: the in-process tier, then Redis; failures and bad entries are misses."""

    def __init__(
        self, capacity: int, redis: RedisTier | None, max_age: int, metrics: ServiceMetrics, key_prefix: str
    ) -> None:
        self.memory: MemoryTier[str, tuple[float, bytes]] = MemoryTier(capacity)
        self.redis = redis
        self.max_age = max_age
        self.metrics = metrics
        self.key_prefix = key_prefix
        """The app's CACHE_PREFIX, the model version and the encoding: see key_prefix()."""
        self._invalid = metrics.cache_lookups.labels(HTTP, INVALID)
        self._writes: set[asyncio.Task[bool]] = set()

    async def get_with_ttl(self, key: str) -> tuple[int, bytes | None]:
        if self.max_age <= 0:
            return 0, None
        entry = self.memory.get(key)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return int(entry[0] - now), entry[1]
        if self.redis is None:
            return 0, None
        ttl, value = await self.redis.get_with_ttl(key)
        if value is None or ttl <= 0:
            return 0, None
        if not valid_entry(key, value):
            self._invalid.inc()
            return 0, None
        self.memory.put(key, (now + ttl, value))
        return ttl, value

    async def get(self, key: str) -> bytes | None:
        return (await self.get_with_ttl(key))[1]

    async def set(self, key: str, value: bytes, expire: int | None = None) -> None:
        # `expire` is the class-level default, the same for every app: the app's own max age rules.
        if self.max_age <= 0:
            return
        self.memory.put(key, (time.monotonic() + self.max_age, value))
        if self.redis is not None and len(self._writes) < MAX_PENDING_WRITES:
            # Write-behind, as for POST: the response does not wait for Redis (bounded by its timeout).
            task = asyncio.create_task(self.redis.set_many([(key, value)], ttl_s=self.max_age))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def clear(self, namespace: str | None = None, key: str | None = None) -> int:
        self.memory.clear()
        return 0

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for the background writes still running; at shutdown."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=timeout_s)


def key_prefix(cache_prefix: str, model_version: str) -> str:
    """<CACHE_PREFIX>-http:<model version>:<encoding>: the rest of a key is the canonical row digest."""
    return f"{cache_prefix}-http:{model_version[:16]}:{ENCODING}:"


class RowResponseCoder(JsonCoder):
    """GET /predict returns (body, row-cache status): only the body is stored, and a body read back
    from the response cache was answered by it (HIT)."""

    @classmethod
    def encode(cls, value: Any) -> bytes:
        body, _row_cache = value
        return super().encode(body)

    @classmethod
    def decode(cls, value: bytes) -> Any:
        return super().decode(value), "HIT"


def valid_entry(key: str, raw: bytes) -> bool:
    """True when `raw` is the JSON of a complete response for the row and model version in `key`."""
    try:
        body = orjson.loads(raw)
        *_, version16, _encoding, digest = key.split(":")
        (row,), (value,) = body["inputs"], body["prediction"]
        features = canonical_row(row)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return False
    return (
        isinstance(value, float) and math.isfinite(value)
        and isinstance(body.get("query_key"), str)
        and isinstance(body.get("model_version"), str) and body["model_version"].startswith(version16)
        and len(row) == len(FEATURES) and all(math.isfinite(v) for v in row_values(features))
        and row_digest(features) == digest
    )  # fmt: skip


def current_backend() -> HttpCacheBackend:
    """The HttpCacheBackend of the app serving this request (set by `stable_etag`)."""
    backend = _current.get()
    if backend is None:
        raise LookupError("GET /predict cache used outside a request")
    return backend


class AppScopedBackend(Backend):
    """The one backend FastAPICache holds: forwards to the current app's HttpCacheBackend."""

    def _backend(self) -> HttpCacheBackend:
        return current_backend()

    async def get_with_ttl(self, key: str) -> tuple[int, bytes | None]:
        return await self._backend().get_with_ttl(key)

    async def get(self, key: str) -> bytes | None:
        return await self._backend().get(key)

    async def set(self, key: str, value: bytes, expire: int | None = None) -> None:
        await self._backend().set(key, value, expire)

    async def clear(self, namespace: str | None = None, key: str | None = None) -> int:
        return await self._backend().clear(namespace, key)


def row_key_builder(
    func: Callable[..., Any],
    namespace: str = "",
    *,
    request: Request | None = None,
    response: Response | None = None,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
) -> str:
    """The route's response cache's key prefix (key_prefix()) and the canonical row digest.

    The app's own prefix, not fastapi-cache2's class-level one (`namespace` starts with that)."""
    assert kwargs is not None  # always given for routes
    return current_backend().key_prefix + row_digest(canonical_row(kwargs["features"].model_dump()))


def etag_for(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison against a list of entity tags, or *."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


Endpoint = Callable[..., Awaitable[Any]]


def stable_etag(backend_of: Callable[[], HttpCacheBackend]) -> Callable[[Endpoint], Endpoint]:
    """Wrap a @cache'd endpoint that returns (body, row-cache status): scope its app's backend
    (`backend_of()`) to the request, set a content-based ETag."""
    return functools.partial(_stable_etag, backend_of)


def _stable_etag(backend_of: Callable[[], HttpCacheBackend], func: Endpoint) -> Endpoint:
    @functools.wraps(func)
    async def endpoint(*args: Any, **kwargs: Any) -> Response:
        request: Request = kwargs["request"]
        response: Response = kwargs["response"]
        backend = backend_of()
        token = _current.set(backend)
        try:
            # The row-cache status of a response computed now; HIT for one the cache answered.
            result, x_cache = await func(*args, **kwargs)
        finally:
            _current.reset(token)
        body = orjson.dumps(result)
        etag = etag_for(body)
        cache_status = response.headers.get("X-FastAPI-Cache")
        backend.metrics.count_http_tier(cache_status)
        if cache_status == "HIT":
            max_age = response.headers.get("Cache-Control", "max-age=0")
        else:
            max_age = f"max-age={backend.max_age}"
        headers = {"ETag": etag, "Cache-Control": f"public, {max_age}", "X-Cache": x_cache}
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    return endpoint
