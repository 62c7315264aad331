"""Typed dependencies: what a route needs, as `Annotated[X, Depends(get_x)]` aliases.

The app's lifespan builds the service and the response cache and leaves them on `app.state`; these
functions are the only readers of those keys, so a route names what it needs by type. They are
`async def` so that FastAPI calls them on the event loop, not through its thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from housing_api.http_cache import HttpCacheBackend
from housing_api.service import PredictionService


async def get_service(request: Request) -> PredictionService:
    service: PredictionService = request.app.state.service
    return service


async def get_http_cache(request: Request) -> HttpCacheBackend:
    backend: HttpCacheBackend = request.app.state.http_cache_backend
    return backend


ServiceDep = Annotated[PredictionService, Depends(get_service)]
HttpCacheDep = Annotated[HttpCacheBackend, Depends(get_http_cache)]
