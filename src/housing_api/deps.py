"""What the routes need, typed: one holder that create_app builds and the lifespan fills.

`build_router(services)` closes over a `Services`, so a route reads `services.service` as a typed
attribute, and nothing reads `app.state`. Not FastAPI's `Annotated[X, Depends(get_x)]` aliases: on
the hot route a dependency is solved on every request, and that cost more than the whole budget of
a change of the request path (5%). Counted with `bench/compare_checkouts.py --instructions`: one
`Depends` on POST /predict was ~72,000 instructions of ~922,000 per one-row hit (7.8%), the same
route reading the holder ~0 (docs/benchmarks.md, "Instructions per request"). A plain attribute is
as typed (mypy checks every use) and as easy to replace in a test (build the app with another one).
GET /predict's response cache reaches fastapi-cache2's key builder the same way: `stable_etag` is
given `lambda: services.http_cache` and scopes it to the request (http_cache.py).
"""

from __future__ import annotations

from housing_api.body import BodyReader
from housing_api.http_cache import HttpCacheBackend
from housing_api.service import PredictionService


class Services:
    """The app's request-path objects. `body` exists from create_app on; `service` and `http_cache`
    are set by the lifespan, which runs before the server takes the first request."""

    service: PredictionService
    http_cache: HttpCacheBackend

    def __init__(self, body: BodyReader) -> None:
        self.body = body
