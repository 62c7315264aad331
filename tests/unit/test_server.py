"""server.py without a process: what a signal does to the server's state, and what the hard deadline
does when it expires. (A real server draining under SIGTERM: tests/integration/test_shutdown.py.)"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from housing_api import server
from housing_api.protocol import BoundedConfig, ConnectionBounds
from housing_api.server import EXIT_SHUTDOWN_TIMEOUT, DrainingServer


@pytest.fixture
def draining() -> Iterator[DrainingServer]:
    bounds = ConnectionBounds(head_timeout_s=5.0, max_head_bytes=8192, idle_timeout_s=5)
    s = DrainingServer(BoundedConfig(lambda: None, bounds), drain_s=0.5, deadline_s=3600.0)
    yield s
    if s._deadline is not None:
        s._deadline.cancel()


def test_sigterm_drains_and_is_not_raised_again_after_a_clean_shutdown(draining: DrainingServer) -> None:
    draining.handle_exit(signal.SIGTERM, None)
    assert draining.should_exit and draining.bounded.draining
    assert signal.SIGTERM not in draining._captured_signals  # a drained SIGTERM exits 0, not -15


def test_sigint_is_still_raised_again(draining: DrainingServer) -> None:
    draining.handle_exit(signal.SIGINT, None)
    assert draining._captured_signals == [signal.SIGINT]


def test_the_first_signal_arms_one_deadline_on_a_daemon_thread(draining: DrainingServer) -> None:
    draining.handle_exit(signal.SIGTERM, None)
    first = draining._deadline
    draining.handle_exit(signal.SIGTERM, None)
    assert first is not None and draining._deadline is first
    assert first.daemon and first.interval == 3600.0 and first.is_alive()


def test_the_deadline_exits_with_the_documented_code_and_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    codes: list[int] = []
    monkeypatch.setattr(server.os, "_exit", codes.append)
    server._exit_now(30.0)
    assert codes == [EXIT_SHUTDOWN_TIMEOUT] == [3]
    assert "shutdown did not finish within 30 s" in capsys.readouterr().err
