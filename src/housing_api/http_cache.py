"""fastapi-cache2 for GET /predict, with its known limits designed around.

- FastAPICache is configured on a class, process-wide. The backend registered there is a proxy
  that forwards to the backend of the app serving the current request (a ContextVar), so several
  apps in one process (tests) never share or overwrite each other's cache.
- Its ETag is `hash()` of the cached bytes: Python salts hash() per process, so two pods would give
  one response two ETags. `stable_etag` replaces it with a digest of the response body and answers
  If-None-Match itself.
- Its default key is built from repr() of the arguments; ours is the canonical row digest plus the
  model version, so a new model never serves an old model's response.
- It has no stampede protection; the handler it wraps goes through the resolver, whose
  single-flight computes concurrent identical misses once.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import orjson
from fastapi_cache.backends import Backend
from starlette.requests import Request
from starlette.responses import Response

from housing_api.cache import MemoryTier, RedisTier
from housing_api.keys import canonical_row, row_digest

_current: ContextVar[HttpCacheBackend | None] = ContextVar("housing_api_http_cache", default=None)


class HttpCacheBackend(Backend):
    """Whole GET responses: the in-process tier, then Redis; failures are misses."""

    def __init__(self, capacity: int, redis: RedisTier | None) -> None:
        self.memory: MemoryTier[str, tuple[float, bytes]] = MemoryTier(capacity)
        self.redis = redis

    async def get_with_ttl(self, key: str) -> tuple[int, bytes | None]:
        entry = self.memory.get(key)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return int(entry[0] - now), entry[1]
        if self.redis is None:
            return 0, None
        ttl, value = await self.redis.get_with_ttl(key)
        if value is not None and ttl > 0:
            self.memory.put(key, (now + ttl, value))
        return ttl, value

    async def get(self, key: str) -> bytes | None:
        return (await self.get_with_ttl(key))[1]

    async def set(self, key: str, value: bytes, expire: int | None = None) -> None:
        ttl = expire or 60
        self.memory.put(key, (time.monotonic() + ttl, value))
        if self.redis is not None:
            await self.redis.set_many([(key, value)], ttl_s=ttl)

    async def clear(self, namespace: str | None = None, key: str | None = None) -> int:
        self.memory.clear()
        return 0


class AppScopedBackend(Backend):
    """The one backend FastAPICache holds: forwards to the current app's HttpCacheBackend."""

    def _backend(self) -> HttpCacheBackend:
        backend = _current.get()
        if backend is None:
            raise LookupError("GET /predict cache used outside a request")
        return backend

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
    """<prefix>:<namespace>:<model version>:<canonical row digest>."""
    assert request is not None and kwargs is not None  # always given for routes
    version: str = request.app.state.service.model.version
    row = canonical_row(kwargs["features"].model_dump())
    return f"{namespace}:{version[:16]}:{row_digest(row)}"


def etag_for(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison against a list of entity tags, or *."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


Endpoint = Callable[..., Awaitable[Any]]


def stable_etag(func: Endpoint) -> Endpoint:
    """Wrap a @cache'd endpoint: scope the backend to this app, and set a content-based ETag."""

    @functools.wraps(func)
    async def endpoint(*args: Any, **kwargs: Any) -> Response:
        request: Request = kwargs["request"]
        response: Response = kwargs["response"]
        token = _current.set(request.app.state.http_cache_backend)
        try:
            result = await func(*args, **kwargs)
        finally:
            _current.reset(token)
        body = orjson.dumps(result)
        etag = etag_for(body)
        cache_status = response.headers.get("X-FastAPI-Cache")
        request.app.state.metrics.count_http_tier(cache_status)
        headers = {
            "ETag": etag,
            "Cache-Control": "public, " + response.headers.get("Cache-Control", "max-age=0"),
            "X-Cache": cache_status or "MISS",
        }
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    return endpoint
