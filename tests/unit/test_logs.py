"""Log lines carry the request's ids: parsing the headers, and both formats."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from housing_api.logs import REQUEST, JsonFormatter, RequestIds, TextFormatter, request_ids, trace_id_of

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()


def record(message: str = "hello", **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("housing_api.x", logging.WARNING, __file__, 1, message, None, None)
    r.__dict__.update(extra)
    return r


def test_request_ids_are_read_from_the_headers() -> None:
    headers = [(b"host", b"x"), (b"traceparent", TRACEPARENT), (b"x-request-id", b"abc-1")]
    assert request_ids(headers) == (b"abc-1", TRACEPARENT)
    assert request_ids([(b"host", b"x")]) == (None, None)


@pytest.mark.parametrize("value", [b"", b"x" * 129, b"a b", b"req\x1b[31m", "é".encode()])
def test_an_empty_oversized_or_unprintable_request_id_is_replaced(value: bytes) -> None:
    assert request_ids([(b"x-request-id", value)]) == (None, None)


def test_generated_request_ids_are_unique_32_hex_digits() -> None:
    ids = RequestIds()
    made = {ids.new() for _ in range(1000)}
    assert len(made) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in made)
    assert RequestIds().new()[:16] != ids.new()[:16]  # one random prefix per process (per app)


@pytest.mark.parametrize(
    ("traceparent", "trace_id"),
    [
        (TRACEPARENT, TRACE_ID),
        (None, None),
        (b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01", None),  # all zeros: invalid
        (b"00-" + b"g" * 32 + b"-00f067aa0ba902b7-01", None),
        (b"00-4bf92f35", None),
    ],
)
def test_the_trace_id_of_a_traceparent(traceparent: bytes | None, trace_id: str | None) -> None:
    assert trace_id_of(traceparent) == trace_id


def test_a_json_line_carries_the_request_and_trace_ids() -> None:
    token = REQUEST.set((b"req-7", TRACEPARENT))
    try:
        line = json.loads(JsonFormatter().format(record(http={"status": 200})))
    finally:
        REQUEST.reset(token)
    assert line["request_id"] == "req-7" and line["trace_id"] == TRACE_ID
    assert (line["level"], line["logger"], line["message"], line["http"]) == ("warning", "housing_api.x", "hello",
                                                                              {"status": 200})  # fmt: skip
    assert line["time"].endswith("Z")


def test_a_json_line_outside_a_request_has_no_ids_and_keeps_its_traceback_in_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        text = JsonFormatter().format(record(exc_info=sys.exc_info()))
    assert "\n" not in text
    line = json.loads(text)
    assert "request_id" not in line and "trace_id" not in line
    assert "ValueError: boom" in line["exception"]


def test_the_current_span_s_ids_win_when_tracing_is_on() -> None:
    token = REQUEST.set((b"req-7", TRACEPARENT))
    try:
        line = json.loads(JsonFormatter(lambda: ("a" * 32, "b" * 16)).format(record()))
    finally:
        REQUEST.reset(token)
    assert (line["request_id"], line["trace_id"], line["span_id"]) == ("req-7", "a" * 32, "b" * 16)


def test_a_text_line_puts_the_ids_after_the_message() -> None:
    token = REQUEST.set((b"req-7", TRACEPARENT))
    try:
        text = TextFormatter().format(record())
    finally:
        REQUEST.reset(token)
    assert text.endswith(f"WARNING housing_api.x: hello [request_id=req-7 trace_id={TRACE_ID}]")
    assert TextFormatter().format(record()).endswith("housing_api.x: hello")
