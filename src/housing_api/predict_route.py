"""POST /predict as a plain ASGI layer in front of FastAPI's routing: the hot path.

Every request to POST /predict is answered here; everything else goes on to the app unchanged.
The FastAPI route (api.py) stays registered, so /docs and /openapi.json document the operation as
before, and it answers the same way should a request reach it. What FastAPI would do per request
on the way (route matching, the endpoint's signature, exception middleware, the instrumentator's
middleware with its Request and Response objects) costs more than a cached answer: this layer does
the same work directly, in the same order:

- the JSON body check (415), then the body within its size, time and memory bounds (body.py:
  413, 408, 429; a client gone is 499), then admission (429), then the prediction within the
  request's deadline (503), whose rows are decoded and validated as before (service.py);
- an exception is answered by the handler api.EXCEPTION_STATUS names for it, the same bytes FastAPI
  sends; one nobody expects is raised on, to Starlette's outermost layer, which answers 500 as it
  does for any route;
- the http_* metrics under the labels the instrumentator gives POST /predict (http_metrics.py).

The request's id, access line, span and in-progress count are InProgress' (http_metrics.py), the
layer around this one, as for every route.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from housing_api.api import EXCEPTION_STATUS, InvalidBatch
from housing_api.body import check_json_body
from housing_api.deps import Services
from housing_api.http_metrics import STATUS_CLASSES, HttpMetrics, Recorder
from housing_api.schemas import describe_validation_error

PATH, METHOD = "/predict", "POST"
_JSON = (b"content-type", b"application/json")


class PredictRoute:
    """Pure ASGI middleware that answers POST /predict and passes every other request on."""

    def __init__(self, app: ASGIApp, services: Services, metrics: HttpMetrics) -> None:
        self.app = app
        self.services = services
        self.metrics = metrics
        # The status classes POST /predict answers with (http_metrics.STATUS_CLASSES), resolved once.
        self._recorders = {int(s[0]): metrics.recorder(metrics.series(PATH, METHOD, s)) for s in STATUS_CLASSES}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != METHOD or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, sent = 500, 0  # unless answered: an exception nobody expects (Starlette's 500)
        try:
            status, sent = await self._answer(scope, receive, send)
        finally:
            self._recorder(status)(_declared_length(scope), sent, time.perf_counter() - started)

    def _recorder(self, status: int) -> Recorder:
        found = self._recorders.get(status // 100)
        return (
            found
            if found is not None
            else self.metrics.recorder(self.metrics.series(PATH, METHOD, f"{status // 100}xx"))
        )

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> tuple[int, int]:
        """Answer the request; its status and the body's length."""
        try:
            content, cache = await self._predict(scope, receive)
        except Exception as exc:
            handler = _handler(exc)
            if handler is None:
                raise
            response: Response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)
            return response.status_code, len(response.body)
        headers = [(b"content-length", b"%d" % len(content)), _JSON, (b"x-cache", cache.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})
        return 200, len(content)

    async def _predict(self, scope: Scope, receive: Receive) -> tuple[bytes, str]:
        headers = scope["headers"]
        check_json_body(headers)
        body = await self.services.body.read(headers, receive)
        service = self.services.service
        async with service.admitted():
            try:
                return await service.predict_body(body)
            except ValidationError as exc:
                raise InvalidBatch(describe_validation_error(exc)) from None


def _handler(exc: Exception) -> Any:
    """The handler api.EXCEPTION_STATUS names for the exception's class or its nearest base, as
    Starlette looks it up; None for the catch-all, which is Starlette's outermost layer's to call."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in EXCEPTION_STATUS:
            return EXCEPTION_STATUS[cls]
    return None


def _declared_length(scope: Scope) -> int:
    """The request's Content-Length, as the instrumentator records it (0 without one)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0
