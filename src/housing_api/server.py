"""The uvicorn server, with the shutdown behaviours a pod needs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
from types import FrameType

import uvicorn

from housing_api.protocol import BoundedConfig, BoundedHttpProtocol

EXIT_SHUTDOWN_TIMEOUT = 3
"""Exit code when the hard shutdown deadline cut off hung work (0 after a clean drain)."""


class DrainingServer(uvicorn.Server):
    """uvicorn, but a drained SIGTERM exits 0, requests already sent are answered, every response
    from SIGTERM on says `Connection: close`, and the whole shutdown ends within `deadline_s`
    whatever is hung (exit code EXIT_SHUTDOWN_TIMEOUT)."""

    def __init__(self, config: BoundedConfig, drain_s: float, deadline_s: float) -> None:
        super().__init__(config)
        self.bounded = config
        self.drain_s = drain_s
        self.deadline_s = deadline_s
        self._deadline: threading.Timer | None = None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting, then give requests already written to open connections a moment
        # to be read: uvicorn closes connections whose request it has not parsed yet, and the
        # client would see a reset for a request it had already sent. Since SIGTERM every
        # response says `Connection: close`, so a busy client stops writing after its next
        # answer, and what is idle when the drain ends has had drain_s to send something.
        for server in self.servers:
            server.close()
        await asyncio.sleep(self.drain_s)
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn re-raises SIGTERM after its graceful shutdown, so the process would die with
        # -15. A drained SIGTERM is the normal way a pod stops: exit 0.
        super().handle_exit(sig, frame)
        self._start_draining()
        if sig == signal.SIGTERM and sig in self._captured_signals:
            self._captured_signals.remove(sig)
        if self._deadline is None:
            # A thread, not the event loop: the loop may be the thing that is stuck, and a hung
            # inference thread would block the interpreter's exit (it joins worker threads).
            self._deadline = threading.Timer(self.deadline_s, _exit_now, args=(self.deadline_s,))
            self._deadline.daemon = True
            self._deadline.start()

    def _start_draining(self) -> None:
        # In the signal handler, between two bytecodes of the loop's thread: only flags change.
        self.bounded.draining = True
        for connection in list(self.server_state.connections):
            if isinstance(connection, BoundedHttpProtocol):
                connection.start_draining()


def _exit_now(deadline_s: float) -> None:
    print(
        f"housing-api: shutdown did not finish within {deadline_s:g} s (hung work); "
        f"exiting with code {EXIT_SHUTDOWN_TIMEOUT}",
        file=sys.stderr,
        flush=True,
    )
    os._exit(EXIT_SHUTDOWN_TIMEOUT)
