"""The uvicorn server, with the two shutdown behaviours a pod needs."""

from __future__ import annotations

import asyncio
import signal
import socket
from types import FrameType

import uvicorn


class DrainingServer(uvicorn.Server):
    """uvicorn, but a drained SIGTERM exits 0 and requests already sent are not reset."""

    def __init__(self, config: uvicorn.Config, drain_s: float) -> None:
        super().__init__(config)
        self.drain_s = drain_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting, then give requests already written to open connections a moment
        # to be read: uvicorn closes connections whose request it has not parsed yet, and the
        # client would see a reset for a request it had already sent.
        for server in self.servers:
            server.close()
        await asyncio.sleep(self.drain_s)
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn re-raises SIGTERM after its graceful shutdown, so the process would die with
        # -15. A drained SIGTERM is the normal way a pod stops: exit 0.
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM and sig in self._captured_signals:
            self._captured_signals.remove(sig)
