"""Hostile clients against `housing-api serve`: slow and oversized heads, idle and non-reading clients,
malformed requests, too many connections, and keep-alive clients writing through a SIGTERM.

Each runs the real server in its own process and talks raw sockets, because these are the bytes the
server layer (protocol.py) handles before the app sees a request. Every wait is bounded; no test
asserts how long something took.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from conftest import MODEL_PATH

from housing_api_testing.harness import ServiceProcess

pytestmark = pytest.mark.integration

BOUND_S = 20.0  # generous: the server's own timeouts in these tests are 1 s
REQUEST = b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n"
Serve = Callable[..., ServiceProcess]  # serve(SETTING="value", ...) starts one; the fixture stops it


@pytest.fixture
def serve() -> Iterator[Serve]:
    services: list[ServiceProcess] = []

    def start(**env: str) -> ServiceProcess:
        service = ServiceProcess({"MODEL_PATH": str(MODEL_PATH), "LOG_LEVEL": "warning", **env}).start()
        services.append(service)
        return service

    yield start
    for service in services:
        if service.alive():
            service.stop()


def connect(service: ServiceProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=BOUND_S)
    return sock


def read_until_closed(sock: socket.socket, bound_s: float = BOUND_S) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or the bound passes (False)."""
    data, deadline = b"", time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if not select.select([sock], [], [], max(deadline - time.monotonic(), 0))[0]:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body (what this service sends)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(data)
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(data)
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:length]


def assert_error_shape(response: bytes, status: int) -> dict[str, object]:
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 %d " % status), response[:200]
    assert b"content-type: application/json" in head.lower(), head
    parsed = json.loads(body)
    assert set(parsed) == {"detail", "errors"} and parsed["errors"] == [], parsed
    assert "Traceback" not in parsed["detail"] and "/" not in parsed["detail"] and "uvicorn" not in body.decode()
    return dict(parsed)


# -- a head that never finishes (#3) ----------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed(serve: Serve) -> None:
    service = serve(HEADER_TIMEOUT_S="1")
    with connect(service) as sock:
        data, closed = read_until_closed(sock)
    assert closed and data == b""  # nothing was asked, so nothing is answered


def test_half_a_request_line_gets_408_and_a_close(serve: Serve) -> None:
    service = serve(HEADER_TIMEOUT_S="1")
    with connect(service) as sock:
        sock.sendall(b"GET /liv")
        data, closed = read_until_closed(sock)
    assert closed
    assert "did not arrive" in str(assert_error_shape(data, 408)["detail"])


def test_a_later_request_on_a_kept_alive_connection_has_the_same_deadline(serve: Serve) -> None:
    service = serve(HEADER_TIMEOUT_S="1")
    with connect(service) as sock:
        sock.sendall(REQUEST)
        assert read_response(sock)[0] == 200
        sock.sendall(b"\r\n")  # bytes that begin no request do not keep the connection either
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: t\r\n")  # the blank line never comes
        data, closed = read_until_closed(sock)
    assert closed
    assert_error_shape(data, 408)


def test_idle_sockets_do_not_take_the_last_connection_slots_for_good(serve: Serve) -> None:
    # The reproduction: with LIMIT_CONCURRENCY=20, 20 sockets that send nothing (or half a
    # request line) made /livez answer 503 for as long as they stayed open.
    service = serve(HEADER_TIMEOUT_S="1", LIMIT_CONCURRENCY="20")
    idle = [connect(service) for _ in range(20)]
    for sock in idle[::2]:
        sock.sendall(b"GET /l")
    try:
        assert all(read_until_closed(sock)[1] for sock in idle)
        assert httpx.get(service.url + "/livez", timeout=BOUND_S).status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(serve: Serve) -> None:
    service = serve(KEEPALIVE_TIMEOUT_S="1", HEADER_TIMEOUT_S="60")
    with connect(service) as sock:
        sock.sendall(REQUEST)
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection") != "close"
        data, closed = read_until_closed(sock)
    assert closed and data == b""


# -- a head that never ends (#3) ------------------------------------------------------------------


def test_a_head_larger_than_max_header_bytes_gets_431_without_being_read(serve: Serve) -> None:
    service = serve(MAX_HEADER_BYTES="16384")
    sent = 0
    with connect(service) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: t\r\nX-Big: ")
        try:
            while sent < 64 * 1024 * 1024:  # the attack sent 100 MiB; the server must stop long before
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:
            pass  # the server closed the connection: the point
        data, _ = read_until_closed(sock)
    assert sent < 64 * 1024 * 1024
    assert "larger than 16384 bytes" in str(assert_error_shape(data, 431)["detail"])


@pytest.mark.parametrize(("size", "status"), [(16_000, 200), (17_000, 431), (100_000, 431)])
def test_a_head_sent_at_once_is_held_to_the_limit_too(serve: Serve, size: int, status: int) -> None:
    service = serve(MAX_HEADER_BYTES="16384")
    with connect(service) as sock:
        head = b"GET /livez HTTP/1.1\r\nHost: t\r\nX-Big: "
        sock.sendall(head + b"a" * (size - len(head) - 4) + b"\r\n\r\n")
        got, _, body = read_response(sock)
    assert got == status, body


# -- errors the server writes itself (#2, the smaller list) ----------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
        # A Content-Length shorter than the body: the rest is read as a request, and is not one.
        b'POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]]]]"',
    ],
    ids=["bad request line", "bad header", "content-length shorter than the body"],
)
def test_a_malformed_request_gets_the_json_error_shape(serve: Serve, request_bytes: bytes) -> None:
    service = serve()
    with connect(service) as sock:
        sock.sendall(request_bytes)
        data, closed = read_until_closed(sock)
    assert closed
    assert_error_shape(data[data.rindex(b"HTTP/1.1 400") :], 400)


def test_past_limit_concurrency_the_503_is_json(serve: Serve) -> None:
    service = serve(LIMIT_CONCURRENCY="2", HEADER_TIMEOUT_S="60")
    held = [connect(service) for _ in range(2)]
    try:
        with connect(service) as sock:
            sock.sendall(REQUEST)
            data, closed = read_until_closed(sock)
        assert closed
        assert_error_shape(data, 503)
        assert b"retry-after: 1" in data.lower()
    finally:
        for sock in held:
            sock.close()


# -- a client that reads nothing (#3) ----------------------------------------------------------------


def test_a_client_that_never_reads_its_answers_is_dropped(serve: Serve) -> None:
    service = serve(KEEPALIVE_TIMEOUT_S="1", HEADER_TIMEOUT_S="60")
    request = b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n"
    with connect(service) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(BOUND_S)
        dropped = False
        deadline = time.monotonic() + BOUND_S * 2
        try:  # pipeline requests and read nothing, until the server gives up on this client
            while time.monotonic() < deadline:
                if select.select([], [sock], [], 0.5)[1]:
                    sock.send(request * 16)
                elif select.select([sock], [], [], 0)[0] and sock.recv(1, socket.MSG_PEEK) == b"":
                    break
        except OSError:
            dropped = True
        if not dropped:  # the server may have reset while we were waiting, not sending
            try:
                sock.setblocking(False)
                while sock.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
            except OSError:
                dropped = True
    assert dropped


# -- SIGTERM with keep-alive clients writing (#5) ------------------------------------------------------


class KeepAliveClient(threading.Thread):
    """Writes requests back to back on one keep-alive connection until the server says or shows it
    is closing it. Every request written is accounted for: answered, or lost."""

    def __init__(self, service: ServiceProcess, pause_s: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.service, self.pause_s = service, pause_s
        self.answered = 0
        self.answered_with_close = 0
        self.closed_before_write = 0  # clean, but it means the client was not told
        self.lost: list[str] = []  # "sent, no response": what the drain must never do

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.service.port), timeout=BOUND_S) as sock:
            self.converse(sock, time.monotonic() + 60)

    def converse(self, sock: socket.socket, deadline: float) -> None:
        while time.monotonic() < deadline:
            time.sleep(self.pause_s)
            if select.select([sock], [], [], 0)[0]:  # the server closed it before this write: clean
                self.closed_before_write += 1
                return
            try:
                sock.sendall(REQUEST)
                _, headers, _ = read_response(sock)
            except (OSError, EOFError) as exc:
                self.lost.append(repr(exc))
                return
            self.answered += 1
            if headers.get("connection") == "close":
                self.answered_with_close += 1
                return


def test_sigterm_answers_every_request_written_on_a_keep_alive_connection(serve: Serve) -> None:
    service = serve(HEADER_TIMEOUT_S="10")
    busy = [KeepAliveClient(service) for _ in range(8)]
    slow = [KeepAliveClient(service, pause_s=0.2) for _ in range(4)]  # idle at the signal, writing in the drain
    for client in busy + slow:
        client.start()
    time.sleep(1.0)
    assert all(c.answered > 0 for c in busy + slow)
    service.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    for client in busy + slow:
        client.join(timeout=BOUND_S * 3)
    assert service.proc.wait(timeout=BOUND_S * 3) == 0  # type: ignore[union-attr]
    assert not any(c.is_alive() for c in busy + slow)
    assert [c.lost for c in busy + slow] == [[] for _ in busy + slow]
    # Every connection was told it would close; none was closed under a client that kept writing.
    assert [(c.answered_with_close, c.closed_before_write) for c in busy + slow] == [(1, 0)] * len(busy + slow)
