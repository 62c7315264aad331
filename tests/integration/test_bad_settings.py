"""`housing-api serve` with a bad setting stops before starting, with one line naming the variable."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAX_BATCH_ROWS": "abc"}, "MAX_BATCH_ROWS=abc"),
        ({"MEMORY_CACHE_ROWS": "-1"}, "MEMORY_CACHE_ROWS=-1"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL=localhost:6379: must start with redis://"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL=verbose: must be one of"),
        ({"REQUEST_TIMEOUT_S": "0"}, "REQUEST_TIMEOUT_S=0"),
        ({"MAX_QUEUED_ROWS": "10"}, "MAX_QUEUED_ROWS (10) must be >= MAX_BATCH_ROWS"),
        ({"LOG_FORMAT": "yaml"}, "LOG_FORMAT=yaml: Input should be 'json' or 'text'"),
        ({"ACCESS_LOG_SAMPLE": "2"}, "ACCESS_LOG_SAMPLE=2"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "otel:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT=otel:4318: must be an http"),
    ],
)
def test_a_bad_setting_stops_startup_with_one_line(env: dict[str, str], named: str) -> None:
    import subprocess
    import sys

    from housing_api_testing.harness import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "housing_api", "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", **env}, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("housing-api: cannot start: ") and named in lines[0]
