"""Routes, and the one table that maps exceptions to HTTP status codes."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi_cache.decorator import cache
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from housing_api.body import BodyTooLarge, UnsupportedMediaType, check_json_body
from housing_api.deps import Services
from housing_api.errors import BodyTimeout, DeadlineExceeded, NotReady, Overloaded, ShuttingDown, StageFailed
from housing_api.http_cache import RowResponseCoder, row_key_builder, stable_etag
from housing_api.logs import request_id_header
from housing_api.registry import public_view
from housing_api.schemas import (
    ErrorBody,
    FieldError,
    HealthBody,
    HouseQuery,
    PredictResponse,
    ReadyBody,
    describe_validation_error,
)
from housing_api.service import CacheStatus

log = logging.getLogger(__name__)


class InvalidBatch(Exception):
    """The batch failed validation; carries the error body."""

    def __init__(self, body: ErrorBody) -> None:
        super().__init__(body.detail)
        self.body = body


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def _error(
    status: int, detail: str, headers: dict[str, str] | None = None, errors: list[FieldError] | None = None
) -> Response:
    return _json(ErrorBody(detail=detail, errors=errors or []).model_dump(), status, headers)


# -- the exception -> status table ---------------------------------------------------------------
async def _invalid_batch(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidBatch)
    return _json(exc.body.model_dump(), 422)


async def _invalid_query(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [FieldError(row=0, field=str(e["loc"][-1])[:64], message=e["msg"]) for e in exc.errors()]
    first = errors[0] if errors else FieldError(row=None, field=None, message="invalid request")
    return _error(422, f"field {first.field}: {first.message}", errors=errors)


async def _too_large(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, BodyTooLarge)
    # The rest of the body is not read; closing the connection keeps the client from sending it.
    return _error(413, str(exc), headers={"Connection": "close"})


async def _media_type(_: Request, exc: Exception) -> Response:
    return _error(415, str(exc))


async def _overloaded(_: Request, exc: Exception) -> Response:
    # 429, not 503: Istio and many clients retry 503 at once, which multiplies an overload.
    assert isinstance(exc, Overloaded)
    return _error(429, f"overloaded: {exc.reason}; retry later", headers={"Retry-After": str(exc.retry_after_s)})


async def _deadline(_: Request, exc: Exception) -> Response:
    # 503 with Retry-After rather than 504: no gateway timed out; this replica declines to keep the
    # client waiting (a hung model, Redis stalled) and says when to try again, on it or another.
    assert isinstance(exc, DeadlineExceeded)
    return _error(503, f"timed out: {exc}; retry later", headers={"Retry-After": str(exc.retry_after_s)})


async def _body_timeout(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, BodyTimeout)
    return _error(408, str(exc), headers={"Connection": "close"})


async def _stage_failed(_: Request, exc: Exception) -> Response:
    # The exception and its traceback were logged once by the stage's supervisor.
    return _error(500, f"internal error: {exc}; it has been logged")


async def _not_ready(_: Request, exc: Exception) -> Response:
    return _error(503, f"not ready: {exc}")


async def _shutting_down(_: Request, __: Exception) -> Response:
    return _error(503, "the service is shutting down; retry on another replica", headers={"Connection": "close"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # GET and POST /predict are two routes; Starlette's Allow names only the one it matched.
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return _error(exc.status_code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    routes = request.app.router.routes
    return [m for m in _METHODS if any(r.matches({**request.scope, "method": m})[0] == Match.FULL for r in routes)]


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a request whose client went away first (the client never receives it)."""


async def _client_gone(_: Request, __: Exception) -> Response:
    # The client closed the connection before its body arrived: not a server error, and no one
    # reads this answer. 499 (nginx's "client closed request") files it under status="4xx" in
    # http_requests_total, so the availability SLI and its burn-rate alerts (status="5xx") never
    # count it; housing_api_client_disconnects_total counts it apart (body.BodyReader).
    return _error(CLIENT_CLOSED_REQUEST, "the client closed the connection before sending the whole body")


async def _unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    # Sent by Starlette's outermost layer, outside the one that adds x-request-id to every response.
    return _error(500, "internal error; it has been logged", headers=request_id_header())


EXCEPTION_STATUS: dict[type[Exception], Any] = {
    InvalidBatch: _invalid_batch,
    RequestValidationError: _invalid_query,
    BodyTooLarge: _too_large,
    UnsupportedMediaType: _media_type,
    Overloaded: _overloaded,
    DeadlineExceeded: _deadline,
    BodyTimeout: _body_timeout,
    StageFailed: _stage_failed,
    NotReady: _not_ready,
    ShuttingDown: _shutting_down,
    StarletteHTTPException: _http_error,
    ClientDisconnect: _client_gone,
    Exception: _unexpected,
}


def install_error_handlers(app: FastAPI) -> None:
    for exc_type, handler in EXCEPTION_STATUS.items():
        app.add_exception_handler(exc_type, handler)


def answer_head_like_get(router: APIRouter) -> None:
    """HEAD wherever the router answers GET: the same status and headers; uvicorn sends no body.

    Each GET route gets a HEAD-only twin rather than HEAD in its own methods, which FastAPI would
    document as a second operation under the GET's operation id. The twins are appended after
    the router's routes (call this last), so a GET or POST is matched before any of them."""
    for route in list(router.routes):
        if isinstance(route, APIRoute) and route.methods == {"GET"}:  # every GET route here is GET alone
            router.add_api_route(
                route.path, route.endpoint, methods=["HEAD"], name=route.name, include_in_schema=False,
                response_model=route.response_model, response_class=route.response_class,
                dependencies=route.dependencies,
            )  # fmt: skip


ERRORS: dict[int | str, dict[str, Any]] = {
    408: {"model": ErrorBody, "description": "The body did not arrive within BODY_TIMEOUT_S."},
    413: {"model": ErrorBody, "description": "Body larger than MAX_BODY_BYTES."},
    415: {"model": ErrorBody, "description": "Body is not JSON, or has a Content-Encoding (gzip, ...)."},
    422: {"model": ErrorBody, "description": "Invalid batch; names the row index and field."},
    429: {"model": ErrorBody, "description": "Overloaded; retry after Retry-After seconds."},
    500: {"model": ErrorBody, "description": "A background stage failed on the batch holding a row (logged)."},
    503: {
        "model": ErrorBody,
        "description": "No prediction within REQUEST_TIMEOUT_S (with Retry-After), or shutting down.",
    },
}
X_CACHE = {"X-Cache": {"description": "HIT (every row from a cache), MISS or PARTIAL.", "schema": {"type": "string"}}}


def build_router(services: Services, body_schema: dict[str, Any], sample_response: dict[str, Any]) -> APIRouter:
    """The routes, reading what they need from `services` (deps.py says why not from dependencies)."""
    router = APIRouter()

    @router.post(
        "/predict",
        summary="Predict a batch",
        response_model=None,
        responses={
            200: {
                "model": PredictResponse,
                "headers": X_CACHE,
                "content": {"application/json": {"example": sample_response}},
            },
            **ERRORS,
        },
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}},
    )
    async def predict(request: Request) -> Response:
        """Predict median house values for a JSON array of 1..MAX_BATCH_ROWS rows.

        Each row is looked up in the in-process cache, then Redis; only rows no cache knows are
        sent to the model, batched with other requests' rows. If any row is invalid the whole
        request is refused with 422, naming the row index and the field.
        """
        check_json_body(request.scope["headers"])
        body = await services.body.read(request.scope["headers"], request.receive)
        service = services.service
        async with service.admitted():
            try:
                content, status = await service.predict_body(body)
            except ValidationError as exc:
                raise InvalidBatch(describe_validation_error(exc)) from None
        return Response(content, media_type="application/json", headers={"X-Cache": status})

    @router.get(
        "/predict",
        summary="Predict one row (HTTP-cacheable)",
        response_model=PredictResponse,
        responses={
            200: {"headers": {**X_CACHE, "ETag": {"schema": {"type": "string"}}}},
            304: {"description": "Not modified (If-None-Match matched the ETag)."},
            **ERRORS,
        },
    )
    @stable_etag(lambda: services.http_cache)
    @cache(namespace="get-predict", key_builder=row_key_builder, coder=RowResponseCoder)
    async def predict_one(
        request: Request,
        response: Response,
        features: Annotated[HouseQuery, Query()],
    ) -> tuple[dict[str, Any], CacheStatus]:
        """Predict one row given as query parameters; cached whole, with ETag and 304."""
        service = services.service
        async with service.admitted():
            return await service.predict_rows([features.model_dump()])  # type: ignore[list-item]

    @router.get("/health", response_model=HealthBody, summary="Liveness in the lab's format")
    async def health() -> dict[str, str]:
        """{"status": "healthy"} while the process serves (what the lab's load scripts check)."""
        return {"status": "healthy"}

    @router.get("/livez", response_model=HealthBody, summary="Process is up", responses={503: {"model": ErrorBody}})
    async def livez() -> dict[str, str]:
        """Answers as long as the event loop runs (inference never blocks it), unless a background
        stage has stayed down past STAGE_DOWN_LIVEZ_S despite its restarts: then 503, so that the
        kubelet restarts the pod."""
        services.service.resolver.check_live()
        return {"status": "ok"}

    @router.get("/readyz", response_model=ReadyBody, summary="Ready to serve", responses={503: {"model": ErrorBody}})
    async def readyz() -> dict[str, str]:
        """Ready once the model is loaded and every background stage runs (503 while one is down
        and being restarted). A Redis outage (cache: degraded) or a Redis that refuses writes
        (cache: readonly or full) is reported, with its reason in cache_reason, but does not make
        the pod unready: the cache is optional and the model still answers."""
        service = services.service
        if down := service.resolver.stages_down():
            raise NotReady(f"stage {', '.join(down)} down, restarting")
        redis = service.resolver.redis
        if redis is None:
            return {"status": "ready", "model_version": service.model.version, "cache": "disabled"}
        if redis.degraded and redis.usable():
            await redis.ping()
        cache_state, reason = redis.state()
        body = {"status": "ready", "model_version": service.model.version, "cache": cache_state}
        return body if reason is None else {**body, "cache_reason": reason}

    @router.get(
        "/model",
        summary="Model metadata",
        responses={200: {"content": {"application/json": {"example": {"version": "a0dd…", "holdout_r2": 0.8648}}}}},
    )
    async def model_metadata() -> dict[str, Any]:
        """The metadata in model.json: version (the sha256 of model.json's content, which records the
        sha256 of every file served), scikit-learn version, features and the derived coordinate
        features the model computes from them, R², MAE; `registry` names the MLflow registry version
        it was fetched from and the version the registry recorded (null for a local file), not where
        the files are stored."""
        service = services.service
        info = service.model.info
        # Which registered version, not where it is stored: /model is public in prod (registry.PUBLIC).
        return {
            **info.raw, "fast_path": service.model.fast_path, "registry": public_view(info.registry),
            "drift": asdict(service.drift),
        }  # fmt: skip

    answer_head_like_get(router)
    return router
