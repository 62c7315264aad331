"""Log lines, and the ids that tie each one to a request.

Every line, the service's own and uvicorn's, goes to stderr as one JSON object (LOG_FORMAT=json, for
the cluster's log pipeline) or as text (LOG_FORMAT=text, for a terminal). A line written while a
request is being served carries that request's id and W3C trace id, read from `REQUEST` when the line
is formatted: the request path only sets the context variable, it never builds a string.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Final, Literal

import orjson

LogFormat = Literal["json", "text"]
ACCESS_LOGGER: Final = "housing_api.access"

REQUEST: ContextVar[tuple[bytes, bytes | None] | None] = ContextVar("housing_api_request", default=None)
"""The request being served: its id (x-request-id, as sent back) and the traceparent it came with."""

TraceIds = Callable[[], tuple[str, str] | None]
"""(trace id, span id) of the current span, when tracing is on (tracing.current_ids)."""

_MAX_REQUEST_ID = 128
_ID_BYTES = bytes(range(0x21, 0x7F))  # visible ASCII: what a UUID or any proxy's id is made of
_HEX = frozenset("0123456789abcdef")


class RequestIds:
    """Request ids for requests that came without one: a random per-process prefix and a counter,
    32 hex digits in all. Cheaper than a UUID per request, and as unique across pods."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex().encode()
        self._next = itertools.count().__next__

    def new(self) -> bytes:
        return b"%s%016x" % (self._prefix, self._next())


def request_id_header() -> dict[str, str] | None:
    """x-request-id for a response sent outside InProgress (Starlette's outermost 500), else None."""
    request = REQUEST.get()
    return None if request is None else {"x-request-id": request[0].decode("latin-1")}


def request_ids(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    """(x-request-id, traceparent) among a request's headers (ASGI names them in lower case). An id
    longer than 128 bytes, or with anything but visible ASCII in it, is not one any proxy sends: it is
    replaced rather than echoed into responses and log lines (a space could forge a text log's fields)."""
    request_id = traceparent = None
    for name, value in headers:
        if name == b"x-request-id":
            request_id = value if 0 < len(value) <= _MAX_REQUEST_ID and not value.translate(None, _ID_BYTES) else None
        elif name == b"traceparent":
            traceparent = value
    return request_id, traceparent


def trace_id_of(traceparent: bytes | None) -> str | None:
    """The trace id of a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`), or None if it is not one."""
    if traceparent is None or len(traceparent) < 55:
        return None
    trace_id = traceparent[3:35].decode("latin-1")
    if traceparent[2:3] != b"-" or not _HEX.issuperset(trace_id) or trace_id == "0" * 32:
        return None
    return trace_id


class _Context:
    """The ids of the line being formatted: the current span's when tracing is on (set for the request
    and for each micro-batch), else the request's own."""

    def __init__(self, trace_ids: TraceIds | None) -> None:
        self.trace_ids = trace_ids

    def fields(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        request = REQUEST.get()
        if request is not None:
            fields["request_id"] = request[0].decode("latin-1")
        ids = self.trace_ids() if self.trace_ids is not None else None
        if ids is not None:
            fields["trace_id"], fields["span_id"] = ids
        elif request is not None and (trace_id := trace_id_of(request[1])) is not None:
            fields["trace_id"] = trace_id
        return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the ids, the access
    line's `http` fields, and the exception's traceback as one string."""

    def __init__(self, trace_ids: TraceIds | None = None) -> None:
        super().__init__()
        self.context = _Context(trace_ids)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **self.context.fields(),
        }
        http = getattr(record, "http", None)
        if http is not None:
            line["http"] = http
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return orjson.dumps(line).decode()


class TextFormatter(logging.Formatter):
    """The format the service always had, with the request's ids appended when there are any."""

    def __init__(self, trace_ids: TraceIds | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.context = _Context(trace_ids)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = self.context.fields()
        if not fields:
            return text
        ids = " ".join(f"{k}={v}" for k, v in fields.items())
        head, newline, rest = text.partition("\n")  # after the message, before a traceback
        return f"{head} [{ids}]{newline}{rest}"


def configure_logging(level: str, fmt: LogFormat, trace_ids: TraceIds | None = None) -> None:
    """Every logger (uvicorn's too: serve passes it no config of its own) to stderr in `fmt`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(trace_ids) if fmt == "json" else TextFormatter(trace_ids))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def _iso_utc(created: float) -> str:
    seconds = time.gmtime(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(created % 1 * 1000):03d}Z"
