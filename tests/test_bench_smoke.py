"""A few-second run of `make bench`, to keep the benchmark working. It asserts no timing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.integration


def test_bench_runs_and_writes_its_report(tmp_path: Path) -> None:
    if not (Path(sys.executable).parent / "k6").exists():
        pytest.skip("k6 is not installed in the virtual environment (make install)")
    out = tmp_path / "benchmarks.md"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--duration", "2s", "--scenarios", "hits",
         "--no-ablations", "--write", str(out)],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    text = out.read_text()
    for needle in ("| hits | ceiling |", "| hits | service |", "ready to serve"):
        assert needle in text
    assert "0.00% |" in text  # no failed requests in the service's runs
