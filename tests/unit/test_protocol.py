"""protocol.py without a socket: the error responses the server layer writes itself, and the config
that installs the bounded protocol. (The bounds on real connections: tests/integration/test_server_bounds.py.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from housing_api.protocol import (
    BoundedConfig,
    BoundedHttpProtocol,
    ConnectionBounds,
    error_response,
    service_unavailable,
)


def test_an_error_response_is_whole_http_with_the_projects_json_shape_and_closes() -> None:
    raw = error_response(431, "request line and headers over 8192 bytes")
    head, body = raw.split(b"\r\n\r\n", 1)
    status, *headers = head.split(b"\r\n")
    assert status.startswith(b"HTTP/1.1 431 ")
    assert dict(h.split(b": ", 1) for h in headers) == {
        b"content-type": b"application/json", b"content-length": b"%d" % len(body), b"connection": b"close",
    }  # fmt: skip
    assert json.loads(body) == {"detail": "request line and headers over 8192 bytes", "errors": []}


def test_past_the_connection_limit_the_answer_is_a_json_503_with_retry_after() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(service_unavailable({}, None, send))  # type: ignore[arg-type]
    start, body = sent
    assert start["status"] == 503 and (b"retry-after", b"1") in start["headers"]
    assert json.loads(body["body"])["detail"] == "too many open connections; retry shortly"


def test_the_config_installs_the_bounded_protocol_and_names_no_server() -> None:
    bounds = ConnectionBounds(head_timeout_s=5.0, max_head_bytes=8192, idle_timeout_s=7)
    config = BoundedConfig(lambda: None, bounds)
    assert (config.http, config.timeout_keep_alive, config.server_header) == (BoundedHttpProtocol, 7, False)
    assert (config.bounds, config.draining) == (bounds, False)
