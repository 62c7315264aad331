"""Schemathesis against the service's own /openapi.json: no 5xx, every response as documented."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Server

pytestmark = pytest.mark.integration
MIN_CASES = 500


def test_generated_requests_never_get_a_5xx_and_match_the_schema(tmp_path: Path) -> None:
    cli = Path(sys.executable).parent / "schemathesis"
    if not cli.exists() and shutil.which("schemathesis") is None:
        pytest.skip("schemathesis is not installed (make install)")
    server = Server({})
    try:
        server.wait_ready()
        result = subprocess.run(
            [str(cli), "run", f"{server.url}/openapi.json", "--checks", "all", "--max-examples", "170",
             "--seed", "20261121", "--workers", "2", "--wait-for-schema", "30", "--no-color"],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    finally:
        server.stop()
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.log").write_text(output)
    assert result.returncode == 0, output[-4000:]
    generated = re.search(r"(\d+) generated", output)
    assert generated is not None, output[-2000:]
    assert int(generated.group(1)) >= MIN_CASES, output[-2000:]
