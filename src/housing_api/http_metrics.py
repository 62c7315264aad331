"""HTTP metrics: prometheus-fastapi-instrumentator's middleware with our own metric set, plus
requests in progress, all on the app's registry.

The instrumentator's default set records latency without the status class, so fast 422s and 429s
share the histogram with real answers and an overload makes the p99 line go *down*. Its own
`latency` helper can add the label, but then the default set (requests, sizes) is gone too, so
`HttpMetrics` records the same names in one place, with `status` on the latency histogram. The
instrumentator's middleware feeds it for every route but POST /predict, whose hot path
(predict_route.py) records its own requests under the same labels without that middleware's
per-request Request and Response objects.

The instrumentator's own in-progress gauge ignores its `registry` argument and registers on the
process-wide one, so a second app in the same process (every test module) fails with
"Duplicated timeseries". InProgress counts the same thing, under the name and labels that gauge
would have had, on the app's registry.

The instrumentator resolves each request's route template by walking every route of the app (and
FastAPI rebuilds the included router's route list for that walk), so its cost grew with each route
added: the HEAD twins of issue 21 cost ~22,000 instructions per POST /predict (docs/benchmarks.md).
`_MemoizedHandlers` remembers the answer per (root path, path, method), as InProgress does.
InProgress is also the one per-request layer of the request's identity (access.py): it reads the
request's x-request-id and traceparent, sends the id back in x-request-id, writes the sampled access
line and, only when tracing is on, holds the request's span. No other middleware is added for it.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.values import MutexValue
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from prometheus_fastapi_instrumentator.routing import get_route_name
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from housing_api.access import AccessLog
from housing_api.logs import REQUEST, request_ids
from housing_api.metrics import LATENCY_BUCKETS

METRICS_PATH = "/metrics"
SLO_ROUTES: tuple[tuple[str, str], ...] = (("/predict", "POST"), ("/predict", "GET"))
"""The (route template, method) pairs the SLIs and alerts read (prometheus/alerts.yaml)."""
STATUS_CLASSES = ("2xx", "4xx", "5xx")
"""The status classes those routes answer with, each created at 0 before the first request: a series
born at 1 (a pod's first 5xx) reads as no increase to rate() and increase(), so the error would be lost."""
# Route templates resolved per (root path, path, method); bounded so that a scan of random
# paths cannot grow it (past the bound, a path is resolved on every request instead).
_MEMO_SIZE = 1024


class _Count:
    """Requests in progress on one (handler, method): a plain int, changed only on the event loop
    and read by the gauge when scraped, so a request costs no lock (Gauge.inc/dec take one each)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> float:
        return self.n


class InProgress:
    """Pure ASGI middleware: http_requests_inprogress{handler, method}, and with `access` the
    request's id, access line and span.

    Pure ASGI rather than BaseHTTPMiddleware, which adds a task and a stream per request; this
    costs a dict lookup and two integer updates, and with `access` a scan of the request's headers,
    one context variable, a wrapped `send` and a random draw (tracing off).
    """

    def __init__(self, app: ASGIApp, gauge: Gauge, excluded: frozenset[str] = frozenset({METRICS_PATH}),
                 access: AccessLog | None = None) -> None:  # fmt: skip
        self.app = app
        self.gauge = gauge
        self.excluded = excluded
        self.access = access
        self._by_path: dict[tuple[str, str, str], tuple[_Count | None, str]] = {}
        self._by_route: dict[tuple[str, str], _Count] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        count, route = self._route(scope)
        access = self.access
        if access is None:
            await self._counted(scope, receive, send, count)
            return
        request_id, traceparent = request_ids(scope["headers"])
        if request_id is None:
            request_id = access.ids.new()
        header = (b"x-request-id", request_id)
        status = 500  # unless a response starts: an exception the app did not answer (Starlette's 500)

        # A plain function returning send's awaitable: no coroutine of its own for each message.
        def send_with_id(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            return send(message)

        REQUEST.set((request_id, traceparent))
        tracing = access.tracing
        if tracing is not None:
            span, span_token = tracing.start_request(scope["method"], route, scope["path"], traceparent)
        if count is not None:
            count.n += 1
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            if count is not None:
                count.n -= 1
            if access.wanted(status, elapsed):
                access.write(scope, route, status, elapsed)
            if tracing is not None:
                tracing.end_request(span, span_token, status, request_id)
        # REQUEST is left set: an exception nobody answered is answered after this, by Starlette's
        # outermost layer (api._unexpected), which names the id too. Each request runs in a task of
        # its own (uvicorn), whose context ends with it.

    async def _counted(self, scope: Scope, receive: Receive, send: Send, count: _Count | None) -> None:
        if count is None:
            await self.app(scope, receive, send)
            return
        count.n += 1
        try:
            await self.app(scope, receive, send)
        finally:
            count.n -= 1

    def _route(self, scope: Scope) -> tuple[_Count | None, str]:
        key = (scope.get("root_path", ""), scope["path"], scope["method"])
        try:
            return self._by_path[key]
        except KeyError:
            pass
        # The instrumentator's own resolution, so the labels match http_requests_total's;
        # a path no route serves is "none", as there.
        handler = get_route_name(HTTPConnection(scope), should_include_root_path=False) or "none"
        count = None if handler in self.excluded else self._route_count(handler, scope["method"])
        if len(self._by_path) < _MEMO_SIZE:
            self._by_path[key] = (count, handler)
        return count, handler

    def _route_count(self, handler: str, method: str) -> _Count:
        count = self._by_route.get((handler, method))
        if count is None:
            count = self._by_route[(handler, method)] = _Count()
            self.gauge.labels(handler, method).set_function(count)
        return count


class _MemoizedHandlers(PrometheusInstrumentatorMiddleware):
    """The instrumentator's middleware, with its route-template lookup memoized (bounded)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handlers: dict[tuple[str, str, str], tuple[str, bool]] = {}

    def _get_handler(self, request: Request) -> tuple[str, bool]:
        scope = request.scope
        key = (scope.get("root_path", ""), scope["path"], scope["method"])
        found = self._handlers.get(key)
        if found is None:
            found = super()._get_handler(request)
            if len(self._handlers) < _MEMO_SIZE:
                self._handlers[key] = found
        return found


Series = tuple[Counter, Summary, Summary, Histogram]
"""One (handler, method, status class)'s request count, request and response sizes, and latency."""


class HttpMetrics:
    """The instrumentator's default metrics, except that latency carries the status class: the SLO
    is on `http_request_duration_seconds{handler="/predict", status="2xx"}`. Fed by the
    instrumentator's middleware (`observe`) for every route but POST /predict, which records its
    own requests directly (`record`, predict_route.py) under the same names and labels."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "http_requests_total", "Requests by method, status class and route template.",
            ["method", "status", "handler"], registry=registry,
        )  # fmt: skip
        self.request_size = Summary(
            "http_request_size_bytes", "Request bodies (Content-Length) by route template.", ["handler"],
            registry=registry,
        )  # fmt: skip
        self.response_size = Summary(
            "http_response_size_bytes", "Response bodies (Content-Length) by route template.", ["handler"],
            registry=registry,
        )  # fmt: skip
        self.latency_all = Histogram(
            "http_request_duration_highr_seconds", "Latency of every request, all routes and statuses together.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "http_request_duration_seconds", "Latency by route template, method and status class.",
            ["handler", "method", "status"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        # The labelled series of each (handler, method, status): labels() takes a lock and builds a key
        # on every call. Bounded like InProgress' memo (handlers are route templates or "none").
        self._series: dict[tuple[str, str, str], Series] = {}
        for handler, method in SLO_ROUTES:
            for status in STATUS_CLASSES:
                self.series(handler, method, status)

    def series(self, handler: str, method: str, status: str) -> Series:
        found = self._series.get((handler, method, status))
        if found is None:
            found = (self.requests.labels(method, status, handler), self.request_size.labels(handler),
                     self.response_size.labels(handler), self.latency.labels(handler, method, status))  # fmt: skip
            if len(self._series) < _MEMO_SIZE:
                self._series[(handler, method, status)] = found
        return found

    def record(self, series: Series, request_bytes: int, response_bytes: int, duration_s: float) -> None:
        count, sent, answered, timed = series
        count.inc()
        sent.observe(request_bytes)
        answered.observe(response_bytes)
        self.latency_all.observe(duration_s)
        timed.observe(duration_s)

    def recorder(self, series: Series) -> Recorder:
        """record() bound to one series: DirectSeries' when prometheus_client keeps the values in
        process, else the public calls."""
        direct = DirectSeries.of(series, self.latency_all)
        return direct.record if direct is not None else partial(self.record, series)

    def observe(self, info: Info) -> None:
        """The instrumentator's callback."""
        headers = getattr(info.response, "headers", None)
        self.record(
            self.series(info.modified_handler, info.method, info.modified_status),
            int(info.request.headers.get("Content-Length", 0)),
            int(headers.get("Content-Length", 0)) if headers else 0,
            info.modified_duration,
        )


Recorder = Callable[[int, int, float], None]
"""Records one request: its body's bytes, its answer's bytes, its duration in seconds."""


class DirectSeries:
    """One series' values updated in place, without prometheus_client's per-call checks and locks.

    Its five updates of a request cost 40,000 instructions through the public calls, a tenth of a
    cached answer (docs/benchmarks.md, issue 26). These values are changed only on the event loop
    (the hot path, and the instrumentator's middleware for the shared all-routes histogram), and a
    scrape reads each one under its lock, a whole float under the GIL, so the locks guard nothing
    here. Histogram buckets are kept per bucket, as prometheus_client keeps them (it sums them when
    scraped); `bisect_left` finds the first bound >= the duration, as its `observe` does."""

    __slots__ = ("answered", "bounds", "count", "latency", "latency_all", "sent")

    def __init__(self, series: Series, latency_all: Histogram) -> None:
        count, sent, answered, timed = series
        self.count = count._value
        self.sent = (sent._count, sent._sum)
        self.answered = (answered._count, answered._sum)
        self.latency = (timed._sum, timed._buckets)
        self.latency_all = (latency_all._sum, latency_all._buckets)
        self.bounds = timed._upper_bounds

    @classmethod
    def of(cls, series: Series, latency_all: Histogram) -> DirectSeries | None:
        """None unless every value is prometheus_client's in-process MutexValue (not multiprocess mode)."""
        direct = cls(series, latency_all)
        values = [direct.count, *direct.sent, *direct.answered, direct.latency[0], *direct.latency[1],
                  direct.latency_all[0], *direct.latency_all[1]]  # fmt: skip
        same_buckets = latency_all._upper_bounds == direct.bounds
        return direct if same_buckets and all(type(v) is MutexValue for v in values) else None

    def record(self, request_bytes: int, response_bytes: int, duration_s: float) -> None:
        self.count._value += 1
        for (n, total), amount in ((self.sent, request_bytes), (self.answered, response_bytes)):
            n._value += 1
            total._value += amount
        bucket = bisect_left(self.bounds, duration_s)
        for total, buckets in (self.latency, self.latency_all):
            total._value += duration_s
            buckets[bucket]._value += 1


def instrument(app: FastAPI, registry: CollectorRegistry) -> HttpMetrics:
    """http_* metrics on `registry`, labelled by route template, method and status class, recorded by
    the instrumentator's middleware (added here); POST /predict records its own (predict_route.py)."""
    metrics = HttpMetrics(registry)
    Instrumentator(
        should_group_status_codes=True,
        should_ignore_untemplated=False,
        should_group_untemplated=True,
        should_instrument_requests_inprogress=False,  # see the module docstring
        excluded_handlers=[f"^{METRICS_PATH}$"],
        registry=registry,
    ).add(metrics.observe).instrument(app)  # /metrics: exposition.serve_metrics
    # The instrumentator's middleware as it added it, with the memo (the module docstring says why).
    app.user_middleware = [
        Middleware(_MemoizedHandlers, *m.args, **m.kwargs) if _is_instrumentator(m) else m for m in app.user_middleware
    ]
    return metrics


def track_requests(app: FastAPI, registry: CollectorRegistry, access: AccessLog | None = None) -> None:
    """http_requests_inprogress on `registry`; with `access`, each request's id, access line and span
    (InProgress, added as the outermost of the app's own layers: every route goes through it)."""
    gauge = Gauge(
        "http_requests_inprogress", "HTTP requests being served, by route template and method.",
        ["handler", "method"], registry=registry,
    )  # fmt: skip
    app.add_middleware(InProgress, gauge=gauge, access=access)


def _is_instrumentator(middleware: Middleware) -> bool:
    cls: object = middleware.cls  # typed as a factory by Starlette; here it is the class that was added
    return cls is PrometheusInstrumentatorMiddleware
