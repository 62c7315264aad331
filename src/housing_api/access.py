"""The access log: which requests get a line, and the line itself.

A line costs a JSON encoding and a write to stderr, tens of microseconds: at the default
ACCESS_LOG_SAMPLE (1%) that is well under a microsecond a request. The decision itself is one random
draw, made after the response, so that a 5xx or a slow request is never left out by the draw.
The per-request wrapper that calls this is http_metrics.InProgress (one ASGI layer for both).
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

from starlette.types import Scope

from housing_api.logs import ACCESS_LOGGER, RequestIds

if TYPE_CHECKING:
    from housing_api.tracing import Tracing


class AccessLog:
    """Request ids for requests without one, the sampled access line, and the tracer when tracing is on."""

    def __init__(self, sample: float, slow_s: float, tracing: Tracing | None = None) -> None:
        self.sample = sample
        self.slow_s = slow_s
        self.tracing = tracing
        self.ids = RequestIds()
        self.log = logging.getLogger(ACCESS_LOGGER)
        self.draw = random.random

    def wanted(self, status: int, elapsed_s: float) -> bool:
        """Every 5xx and every slow request; the others at the sample rate."""
        return status >= 500 or elapsed_s >= self.slow_s or self.draw() < self.sample

    def write(self, scope: Scope, route: str, status: int, elapsed_s: float) -> None:
        """The line, within the request's context (the formatter adds the request and trace ids)."""
        method, path = scope["method"], scope["path"]
        ms = round(elapsed_s * 1000, 3)
        # The path without its query string: GET /predict's query is a client's row, not ours to log.
        http = {"method": method, "path": path, "route": route, "status": status, "duration_ms": ms}
        level = logging.WARNING if status >= 500 else logging.INFO
        self.log.log(level, "%s %s %d %.1f ms", method, path, status, ms, extra={"http": http})
