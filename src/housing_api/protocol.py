"""The HTTP/1.1 connection: uvicorn's httptools protocol with the bounds it lacks.

uvicorn (0.54, httptools) waits forever for a request's line and headers and buffers them without
limit, and writes its own 400 and 503 as plain text. This subclass adds, per connection:

- a deadline for each request's line and headers (the first one counted from the connect, each
  later one from its first byte): past it 408 if part of a request arrived, else a silent close;
- a size limit on the line and headers: past it 431, without reading the rest;
- the idle timeout between requests (uvicorn's keep-alive timer, set from KEEPALIVE_TIMEOUT_S),
  which also bounds how long a client that reads nothing can hold a response in the write buffer;
- the project's JSON error shape for every response the server layer writes itself;
- the drain: from SIGTERM on every response says `Connection: close`, and a connection is closed
  only when no request is in progress or partly received on it.

docs/reliability.md ("The server layer") has the reasoning and the measured cost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn._types import ASGI3Application, ASGIApplication, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState


@dataclass(frozen=True)
class ConnectionBounds:
    """How long a connection may take to send a request's head, how large it may be, how long it may idle."""

    head_timeout_s: float
    max_head_bytes: int
    idle_timeout_s: int


class BoundedConfig(uvicorn.Config):
    """uvicorn's Config with the bounds the protocol reads, and the drain flag the server sets on SIGTERM."""

    def __init__(self, app: ASGIApplication | Callable[..., Any], bounds: ConnectionBounds, **kwargs: Any) -> None:
        super().__init__(
            app,
            http=BoundedHttpProtocol,
            timeout_keep_alive=bounds.idle_timeout_s,
            loop="uvloop",
            server_header=False,  # no dependency named in responses
            **kwargs,
        )
        self.bounds = bounds
        self.draining = False


def error_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    """Headers of an error the server layer writes: JSON, and the connection closes after it."""
    return [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), (b"connection", b"close")]


def error_body(detail: str) -> bytes:
    """The project's error shape (schemas.ErrorBody), with no field errors."""
    return json.dumps({"detail": detail, "errors": []}).encode()


def error_response(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 error response, for the protocol to write before the app has the request."""
    body = error_body(detail)
    return b"".join([STATUS_LINE[status], *(b"%s: %s\r\n" % h for h in error_headers(body)), b"\r\n", body])


BUSY_BODY = error_body("too many open connections; retry shortly")


async def service_unavailable(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """What a request past LIMIT_CONCURRENCY gets, instead of uvicorn's plain-text 503."""
    headers = [*error_headers(BUSY_BODY), (b"retry-after", b"1")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": BUSY_BODY})


class HeadTooLarge(Exception):
    """The request line and headers passed MAX_HEADER_BYTES (raised inside the parser to stop it)."""


class BoundedHttpProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection, with a head deadline, a head size limit, JSON errors and a clean drain."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, BoundedConfig), "serve with BoundedConfig"
        self.bounded = config
        self.max_head_bytes = config.bounds.max_head_bytes
        # uvicorn would answer its own plain-text 503; _start_asgi_task applies the limit instead.
        self.concurrency_limit, self.limit_concurrency = self.limit_concurrency, None
        self.head_timer: asyncio.TimerHandle | None = None
        self.write_timer: asyncio.TimerHandle | None = None
        self.head_pending = False  # part of a request's line or headers has arrived, not all of it
        self.head_bytes = 0  # bytes received in earlier reads while the head was pending
        self.last_read = 0

    # -- the head deadline ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.bounded.bounds.head_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing():
            return
        busy = self.cycle is not None and not self.cycle.response_complete
        if self.head_pending and not busy:
            timeout = self.bounded.bounds.head_timeout_s
            self._reject(408, f"request line and headers did not arrive within {timeout:g} s")
        else:
            self._close()  # nothing started, or a slow head pipelined behind a response: no 408 to interleave

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_pending = True
        self.head_bytes = 0

    def on_headers_complete(self) -> None:
        if self.head_bytes + self.last_read > self.max_head_bytes and self._head_size() > self.max_head_bytes:
            raise HeadTooLarge
        self.head_pending = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().on_headers_complete()
        if self.bounded.draining:
            self.cycle.keep_alive = False

    def _head_size(self) -> int:
        """The head's size as parsed (exact enough: what the parser held), computed only near the limit."""
        return len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def data_received(self, data: bytes) -> None:
        # uvicorn's, plus the head's size and deadline. The common case (a whole head in one read)
        # arms no timer: only a head still incomplete after a read is given a deadline.
        self._unset_keepalive_if_required()
        if self.head_pending:
            self.head_bytes += self.last_read
        self.last_read = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._reject(431, f"request line and headers larger than {self.max_head_bytes} bytes")
            else:
                self.logger.debug("Invalid HTTP request received.")
                self._reject(400, "invalid HTTP request")
            return
        if self.head_pending:
            if self.head_bytes + self.last_read > self.max_head_bytes:
                self._reject(431, f"request line and headers larger than {self.max_head_bytes} bytes")
            else:
                self._arm_head_deadline()
        elif self.timeout_keep_alive_task is None and self._idle():
            self._arm_head_deadline()  # bytes between requests that began none (CRLFs): not a way to stay idle

    def _upgrade(self) -> None:
        if self._should_upgrade():
            self.handle_websocket_upgrade()
        else:
            self._unsupported_upgrade_warning()

    def _idle(self) -> bool:
        return (self.cycle is None or self.cycle.response_complete) and not self.pipeline

    # -- errors the server layer writes itself -------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        self._reject(400, "invalid HTTP request")

    def _reject(self, status: int, detail: str) -> None:
        self.head_pending = False
        if not self.transport.is_closing():
            self.transport.write(error_response(status, detail))
            self._close()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        limit = self.concurrency_limit
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self.logger.warning("Exceeded concurrency limit.")
            app = service_unavailable
        super()._start_asgi_task(cycle, app)

    # -- closing: idle, slow readers, drain ----------------------------------------------------

    def _close(self) -> None:
        # close() waits for the write buffer to drain, which a client that reads nothing never
        # lets happen: the connection would be held for good. Discard what it did not read.
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self._close()

    def pause_writing(self) -> None:
        # Past uvloop's 64 KiB high-water mark the next response waits for the client to read;
        # a client that reads nothing for the idle timeout loses the connection.
        super().pause_writing()
        if self.write_timer is None:
            self.write_timer = self.loop.call_later(self.timeout_keep_alive, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.head_timer, self.write_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.write_timer = None
        super().connection_lost(exc)

    def start_draining(self) -> None:
        """SIGTERM: every response not yet started on this connection will say `Connection: close`."""
        # A response whose head is already out without it stays keep-alive: closing after it
        # would race the client's next request. That request is answered with the close instead.
        for cycle in self._cycles():
            if not cycle.response_started:
                cycle.keep_alive = False

    def _cycles(self) -> list[RequestResponseCycle]:
        return [c for c in (self.cycle, *(c for c, _ in self.pipeline)) if c is not None]

    def shutdown(self) -> None:
        # The drain is over (uvicorn's shutdown). uvicorn closes a connection whose current
        # response is complete even when the next request has partly arrived, and its client
        # would see no answer to a request it sent: such a connection closes after that answer.
        if self.head_pending or not self._idle():
            for cycle in self._cycles():
                cycle.keep_alive = False
        else:
            self._close()
