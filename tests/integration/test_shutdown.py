"""Shutdown of a real server: hung work ends at the hard deadline with the documented exit code, a clean
drain exits 0."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import wait_until

from housing_api.schemas import SAMPLE_BATCH

pytestmark = pytest.mark.integration


ROW = SAMPLE_BATCH[0]


def test_shutdown_with_hung_work_ends_within_its_deadline_with_the_documented_code(tmp_path: Any) -> None:
    import signal
    import sys

    from helpers.faulty_serve import HANG_MEDINC

    from housing_api.server import EXIT_SHUTDOWN_TIMEOUT
    from housing_api_testing.harness import ROOT, Proc, free_port

    port = free_port()
    env = {"MODEL_PATH": str(ROOT / "model" / "model.joblib"), "INLINE_PREDICT_ROWS": "0",
           "REQUEST_TIMEOUT_S": "1", "SHUTDOWN_TIMEOUT_S": "4"}  # fmt: skip
    server = Proc([sys.executable, str(ROOT / "tests/helpers/faulty_serve.py"), "serve", "--port", str(port)], env,
                  cwd=ROOT, log=tmp_path / "serve.log")  # fmt: skip
    server.spawn()
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: httpx.get(url + "/readyz", timeout=1).status_code == 200, 60), server.output()
        hung = httpx.post(url + "/predict", json=[{**ROW, "MedInc": HANG_MEDINC}], timeout=10)
        assert hung.status_code == 503  # the request's deadline; the model thread stays hung
        server.signal(signal.SIGTERM)
        # Inside the pod's grace period whatever is hung: the hard deadline, then the documented code.
        assert server.wait(timeout_s=4 + 6) == EXIT_SHUTDOWN_TIMEOUT
        assert "shutdown did not finish within 4 s" in server.output()
    finally:
        server.stop(timeout_s=1)


def test_a_clean_shutdown_still_exits_0(tmp_path: Any) -> None:
    from conftest import Server

    server = Server({"SHUTDOWN_TIMEOUT_S": "10"})
    server.wait_ready()
    assert httpx.post(server.url + "/predict", json=SAMPLE_BATCH).status_code == 200
    assert server.stop() == 0
