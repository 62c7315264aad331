"""Hostile input, overload and Redis faults: the service refuses clearly and never fails with a 5xx."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RedisServer, app_client, make_settings, run, running_app
from fastapi.testclient import TestClient
from helpers.model_spy import ModelSpy, rows

from housing_api.app import create_app
from housing_api.schemas import SAMPLE_BATCH

# serial: deadlines and shed load under a slow model; parallel workers on the same cores would skew
# them (Makefile, test).
pytestmark = pytest.mark.serial
GOOD = SAMPLE_BATCH[0]
GOOD_JSON = json.dumps(GOOD)


def hostile_bodies() -> list[tuple[str, bytes, str]]:
    """(case, body, content type): the issue's list of broken and crafted requests."""
    json_type = "application/json"
    extra = {**GOOD, **{f"extra_{i}": i for i in range(10_000)}}
    return [
        ("invalid JSON", b"[{", json_type),
        ("invalid UTF-8", b'[{"MedInc": "\xff\xfe"}]', json_type),
        ("wrong Content-Type", json.dumps([GOOD]).encode(), "application/x-www-form-urlencoded"),
        ("NaN", f"[{GOOD_JSON.replace('8.3252', 'NaN')}]".encode(), json_type),
        ("Infinity", f"[{GOOD_JSON.replace('8.3252', 'Infinity')}]".encode(), json_type),
        ("1e309", f"[{GOOD_JSON.replace('8.3252', '1e309')}]".encode(), json_type),
        ("number as a non-numeric string", json.dumps([{**GOOD, "MedInc": "eight"}]).encode(), json_type),
        ("boolean", json.dumps([{**GOOD, "HouseAge": True}]).encode(), json_type),
        ("null", json.dumps([{**GOOD, "HouseAge": None}]).encode(), json_type),
        ("nested arrays", json.dumps([[GOOD]]).encode(), json_type),
        ("deeply nested arrays", b"[" * 100_000 + b"]" * 100_000, json_type),
        ("object instead of array", json.dumps(GOOD).encode(), json_type),
        ("10,000 extra fields on a row", json.dumps([extra]).encode(), json_type),
        ("a key of 1 MB", json.dumps([{**GOOD, "k" * 1_000_000: 1}]).encode(), json_type),
        ("a missing-field key of 1 MB", json.dumps([{"k" * 1_000_000: 1}]).encode(), json_type),
        ("300,000 empty rows", b"[" + b"{}," * 300_000 + b"{}]", json_type),
        ("a number with a million digits", b'[{"MedInc": ' + b"1" * 1_000_000 + b"}]", json_type),
    ]


@pytest.mark.parametrize(("case", "body", "content_type"), hostile_bodies(), ids=[c[0] for c in hostile_bodies()])
def test_hostile_input_gets_a_clear_4xx_never_a_5xx(
    client: TestClient, case: str, body: bytes, content_type: str
) -> None:
    r = client.post("/predict", content=body, headers={"Content-Type": content_type})
    if case in ("10,000 extra fields on a row", "a key of 1 MB"):
        assert r.status_code == 200  # extra fields are ignored, whatever their number or size
        return
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text[:200])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail
    assert len(r.content) < 20_000  # a hostile key is never echoed back in full


def test_too_many_rows_is_422(client: TestClient) -> None:
    r = client.post("/predict", json=[GOOD] * 1001)
    assert r.status_code == 422 and "at most 1000" in r.json()["detail"]


def test_chunked_body_over_the_limit_is_413_without_reading_it_all() -> None:
    sent = []

    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(10_000):
            sent.append(1)
            yield (GOOD_JSON + ",").encode() * 10

    with app_client(max_body_bytes=64 * 1024) as c:
        r = c.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "65536" in r.json()["detail"]


def test_declared_oversized_body_is_refused_before_reading() -> None:
    with app_client(max_body_bytes=1024) as c:
        r = c.post("/predict", content=b"[" + b" " * 5000 + b"]", headers={"Content-Type": "application/json"})
        assert r.status_code == 413


def test_settings_refuse_a_queue_smaller_than_a_batch() -> None:
    with pytest.raises(ValueError, match="MAX_QUEUED_ROWS"):
        make_settings(max_batch_rows=100, max_queued_rows=10)


def test_past_the_inflight_bound_requests_get_429_at_once() -> None:
    async def scenario() -> tuple[list[int], list[str], bool]:
        app = create_app(make_settings(inline_predict_rows=0, max_inflight_requests=2))
        async with running_app(app) as c:
            ModelSpy(app.state.service.model, delay_s=0.5)
            admitted = [asyncio.create_task(c.post("/predict", json=rows(1, start=30 + i))) for i in range(2)]
            await asyncio.sleep(0.1)
            refused = await asyncio.gather(*(c.post("/predict", json=rows(1, start=40 + i)) for i in range(5)))
            refused_while_busy = not any(t.done() for t in admitted)
            done = await asyncio.gather(*admitted)
            return (
                [r.status_code for r in [*done, *refused]],
                [r.headers.get("Retry-After", "") for r in refused],
                refused_while_busy,
            )

    statuses, retry_after, refused_while_busy = run(scenario())
    assert statuses == [200, 200, 429, 429, 429, 429, 429]
    assert all(v.isdigit() for v in retry_after)
    assert refused_while_busy  # refusals did not wait for the model


def test_past_the_queued_rows_bound_requests_get_429() -> None:
    async def scenario() -> list[int]:
        app = create_app(make_settings(inline_predict_rows=0, max_batch_rows=5, max_queued_rows=8))
        async with running_app(app) as c:
            ModelSpy(app.state.service.model, delay_s=0.3)
            first = asyncio.create_task(c.post("/predict", json=rows(5, start=50)))
            await asyncio.sleep(0.05)
            second = await c.post("/predict", json=rows(5, start=60))
            return [(await first).status_code, second.status_code]

    assert run(scenario()) == [200, 429]


class DelayProxy:
    """A TCP proxy that holds every chunk from Redis for `delay_s`: a Redis that answers slowly."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.delay_s), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, delay_s: float) -> None:
        try:
            while data := src.recv(65536):
                time.sleep(delay_s)
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()


@pytest.mark.integration
def test_a_slow_redis_adds_at_most_the_configured_timeout(own_redis: RedisServer) -> None:
    proxy = DelayProxy(own_redis.port, delay_s=2.0)
    try:
        with app_client(redis_url=f"redis://127.0.0.1:{proxy.port}/0", redis_timeout_ms=100) as c:
            for i in range(5):
                started = time.monotonic()
                r = c.post("/predict", json=rows(2, start=70 + i))
                elapsed = time.monotonic() - started
                assert r.status_code == 200
                assert elapsed < 1.0, elapsed  # bounded by the 100 ms timeout, not the 2 s Redis delay
            assert c.get("/readyz").json()["cache"] == "degraded"
    finally:
        proxy.close()


@pytest.mark.integration
def test_redis_with_a_password(tmp_path: Any) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        server.client().config_set("requirepass", "s3cret")
        url = f"redis://:s3cret@127.0.0.1:{server.port}/0"
        with app_client(redis_url=url) as c:
            c.post("/predict", json=SAMPLE_BATCH)
            assert c.get("/readyz").json()["cache"] == "ok"
        with app_client(redis_url=f"redis://:wrong@127.0.0.1:{server.port}/0") as c:
            assert c.post("/predict", json=SAMPLE_BATCH).status_code == 200
            assert c.get("/readyz").json()["cache"] == "degraded"
    finally:
        import redis

        redis.Redis(port=server.port, password="s3cret").config_set("requirepass", "")
        server.stop()


def test_unexpected_errors_are_a_json_500_not_a_crash() -> None:
    async def scenario() -> tuple[int, dict[str, Any], int]:
        app = create_app(make_settings())
        async with running_app(app) as c:
            model = app.state.service.model
            original = model.predict
            model.predict = lambda X: (_ for _ in ()).throw(RuntimeError("boom"))
            broken = await c.post("/predict", json=rows(2, start=90))
            model.predict = original
            healthy = await c.post("/predict", json=rows(2, start=90))
            return broken.status_code, broken.json(), healthy.status_code

    status, body, after = run(scenario())
    assert status == 500 and body["detail"].startswith("internal error")
    assert after == 200  # a failed model call does not poison the rows it was computing


def test_admitted_requests_are_answered_when_the_client_gives_up() -> None:
    async def scenario() -> int:
        app = create_app(make_settings(inline_predict_rows=0))
        async with running_app(app) as c:
            ModelSpy(app.state.service.model, delay_s=0.3)
            same = rows(1, start=95)
            impatient = asyncio.create_task(c.post("/predict", json=same))
            await asyncio.sleep(0.05)
            patient = asyncio.create_task(c.post("/predict", json=same))
            await asyncio.sleep(0.05)
            impatient.cancel()
            return (await patient).status_code

    assert run(scenario()) == 200


def make_tls_files(tmp: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed: apt-get install -y openssl")
    ca_key, ca, key, csr, cert = (tmp / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    ext = tmp / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for argv in (
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            ca_key,
            "-out",
            ca,
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
        ],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "1",
            "-extfile",
            ext,
        ],
    ):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)
    return ca, cert, key


@pytest.mark.integration
def test_redis_over_tls(tmp_path: Path) -> None:
    from housing_api_testing.harness import free_port

    ca, cert, key = make_tls_files(tmp_path)
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    proc = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        if proc.poll() is not None:
            pytest.skip("this redis-server was built without TLS support")
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
        with app_client(redis_url=url, redis_timeout_ms=500) as c:
            assert c.post("/predict", json=SAMPLE_BATCH).status_code == 200
            assert c.get("/readyz").json()["cache"] == "ok"
        with app_client(redis_url=f"rediss://127.0.0.1:{port}/0", redis_timeout_ms=500) as c:
            # Without our CA the certificate does not verify: degraded, never insecure, still serving.
            assert c.post("/predict", json=SAMPLE_BATCH).status_code == 200
            assert c.get("/readyz").json()["cache"] == "degraded"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
