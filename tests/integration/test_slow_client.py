"""Slow and vanishing clients against a real server: stalled uploads hold no prediction slot and get 408,
open connections are bounded, a client that hangs up mid-upload is not a 5xx."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest
from conftest import wait_until

from housing_api.schemas import SAMPLE_BATCH
from housing_api_testing.harness import ServiceProcess, metric_value

pytestmark = pytest.mark.integration


def stalled_upload(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    s.sendall(head + b'[{"MedInc":')
    return s


def read_status(s: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data else 0


def test_stalled_uploads_hold_no_prediction_slot_and_get_408(tmp_path: Any) -> None:
    from conftest import Server

    server = Server({"MAX_INFLIGHT_REQUESTS": "4", "BODY_TIMEOUT_S": "2"})
    try:
        server.wait_ready()
        stalled = [stalled_upload(server.port) for _ in range(12)]
        time.sleep(0.3)  # every stalled request has reached the handler
        r = httpx.post(server.url + "/predict", json=SAMPLE_BATCH, timeout=10)
        assert r.status_code == 200 and len(r.json()["prediction"]) == 4
        statuses = [read_status(s) for s in stalled]
        assert statuses == [408] * 12
        for s in stalled:
            s.close()
        metrics = httpx.get(server.url + "/metrics").text
        assert metric_value(metrics, "housing_api_request_timeouts_total", kind="body") == 12
    finally:
        server.stop()


def test_open_connections_are_bounded(tmp_path: Any) -> None:
    from conftest import Server

    server = Server({"LIMIT_CONCURRENCY": "8", "BODY_TIMEOUT_S": "3"})
    try:
        server.wait_ready()
        stalled = [stalled_upload(server.port) for _ in range(8)]
        time.sleep(0.3)
        r = httpx.get(server.url + "/livez", timeout=10)  # refused at once, not queued behind them
        assert r.status_code == 503
        for s in stalled:
            s.close()
        assert wait_until(lambda: httpx.get(server.url + "/livez", timeout=2).status_code == 200, 10)
    finally:
        server.stop()


def scraped_value(url: str, name: str, **labels: str) -> float:
    """One series' value on /metrics (0 when it is not there)."""
    return metric_value(httpx.get(url + "/metrics", timeout=5).text, name, **labels)


def test_a_client_that_hangs_up_mid_upload_is_not_a_5xx_and_is_logged_once(tmp_path: Any) -> None:
    log = tmp_path / "serve.log"
    server = ServiceProcess({}, log).start()
    try:
        for _ in range(5):
            stalled_upload(server.port).close()  # headers and part of the body, then gone
        answered = {"handler": "/predict", "method": "POST"}
        assert wait_until(lambda: scraped_value(server.url, "http_requests_total", **answered) == 5, 10)
        assert scraped_value(server.url, "http_requests_total", **answered, status="5xx") == 0
        assert scraped_value(server.url, "housing_api_client_disconnects_total") == 5
        assert httpx.post(server.url + "/predict", json=SAMPLE_BATCH, timeout=10).status_code == 200
    finally:
        server.stop()
    text = log.read_text()
    assert "Traceback" not in text and "ClientDisconnect" not in text, text[-3000:]
    assert text.count("hung up") == 1, text[-3000:]
