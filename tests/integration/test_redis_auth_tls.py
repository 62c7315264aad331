"""Redis with a password and over TLS (rediss://): the right credentials and CA use the tier, wrong
ones leave the service serving, degraded. Real redis-server."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import RedisServer, app_client

from housing_api.schemas import SAMPLE_BATCH

# serial: deadlines and shed load under a slow model; parallel workers on the same cores would skew
# them (Makefile, test).
pytestmark = pytest.mark.serial


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
