"""Reading a POST body within its bounds: size (413), time (408) and the bytes held across requests (429).

create_app builds one `BodyReader` from the settings and the app's metrics; the route calls it. The
exceptions carry the bound they report, so the handlers in api.py's table need nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import Counter
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from housing_api.errors import BodyTimeout, Overloaded
from housing_api.metrics import BODY, BODY_BUDGET, ServiceMetrics

log = logging.getLogger(__name__)
JSON_TYPES = ("application/json",)
Headers = list[tuple[bytes, bytes]]
"""A request's raw ASGI headers (scope["headers"]): lower-case names."""


class BodyTooLarge(Exception):
    """The request body is over MAX_BODY_BYTES."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes")
        self.limit = limit


class UnsupportedMediaType(Exception):
    """The body is declared as something other than JSON, or as encoded (gzip, ...)."""


class HangUps:
    """Clients that hung up mid-upload: each counted, logged at most once per `log_every_s` (a
    burst of them is one line saying how many), never with a traceback (nothing failed here)."""

    def __init__(self, counter: Counter, log_every_s: float = 10.0) -> None:
        self.counter = counter
        self.log_every_s = log_every_s
        self._logged_at = -float("inf")
        self._unlogged = 0

    def record(self) -> None:
        self.counter.inc()
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= self.log_every_s:
            log.info(
                "a client hung up before sending its whole body (%d since the last such line, one per %g s at most)",
                self._unlogged, self.log_every_s,
            )  # fmt: skip
            self._logged_at, self._unlogged = now, 0


class BodyBudget:
    """Bytes of request bodies held in memory while they are being read, across all requests.

    Bodies are read before admission, so MAX_INFLIGHT_REQUESTS no longer bounds them; this does,
    at the same total as before (MAX_INFLIGHT_REQUESTS x MAX_BODY_BYTES), whatever the number of
    connections. Past it a request gets 429 at once rather than the pod running out of memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give_back(self, n: int) -> None:
        self.held -= n


class BodyReader:
    """A request's body within MAX_BODY_BYTES (413), BODY_TIMEOUT_S (408) and the body budget (429).

    Read before the request takes an admission slot: a client that stalls its upload holds a
    connection (bounded by LIMIT_CONCURRENCY) and at most its body's bytes (bounded by the body
    budget), never a prediction slot."""

    def __init__(self, max_bytes: int, timeout_s: float, budget: BodyBudget, metrics: ServiceMetrics) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.budget = budget
        self.hang_ups = HangUps(metrics.client_disconnects)
        self._timed_out = metrics.timeouts.labels(BODY)
        self._over_budget = metrics.rejected.labels(BODY_BUDGET)

    async def read(self, headers: Headers, receive: Receive) -> bytes:
        """The body of the request whose raw ASGI headers and receive channel these are."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._read_limited(_content_length(headers), receive)
        except TimeoutError:
            self._timed_out.inc()
            raise BodyTimeout(self.timeout_s) from None
        except ClientDisconnect:
            self.hang_ups.record()
            raise

    async def _read_limited(self, declared: bytes | None, receive: Receive) -> bytes:
        """Read the body, refusing (413) as soon as it is known to be over the limit."""
        limit, budget = self.max_bytes, self.budget
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(limit)
        chunks: list[bytes] = []
        # The bytes this request holds: counted only after a chunk is taken, and given back once,
        # here, whatever ends the read (413, 429, a timeout, the client gone). A chunk refused for the
        # size limit or the budget was never taken, so it is never given back.
        taken = 0
        try:
            # ASGI's receive, read as Starlette's Request.stream() reads it, without the generator.
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk: bytes = message.get("body", b"")
                more = message.get("more_body", False)
                if taken + len(chunk) > limit:
                    raise BodyTooLarge(limit)
                if not budget.take(len(chunk)):
                    self._over_budget.inc()
                    raise Overloaded(f"request bodies being read hold more than {budget.limit} bytes")
                taken += len(chunk)
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            budget.give_back(taken)


def _content_length(headers: Headers) -> bytes | None:
    for name, value in headers:
        if name == b"content-length":
            return value
    return None


def check_json_body(headers: Headers) -> None:
    """A missing Content-Type is taken as JSON; a different one is refused (415), and so is a body
    with a Content-Encoding: decoding it would need a bound of its own on the decoded size (a small
    gzip can inflate a thousandfold), and a batch is small enough to send as it is."""
    declared: bytes | None = None
    encoded = False
    # One pass over the raw headers (ASGI names are lower-case) rather than a Headers.get per name,
    # each of which walks the whole list: this runs on every POST.
    for name, value in headers:
        if name == b"content-type":
            declared = value if declared is None else declared
        elif name == b"content-encoding":
            encoded = encoded or value.strip().lower() not in (b"", b"identity")
    if declared is not None:
        media = declared.split(b";", 1)[0].strip().lower().decode("latin-1")
        if media not in JSON_TYPES and not media.endswith("+json"):
            raise UnsupportedMediaType("send the batch as JSON with Content-Type: application/json")
    if encoded:
        raise UnsupportedMediaType("Content-Encoding is not supported: send the JSON body unencoded")
