"""CPU per request of the HTTP protocol layer alone, no sockets: uvicorn's httptools protocol, ours
(protocol.py) and uvicorn's h11 one, on one keep-alive connection, a one-row POST and an app that
answers at once. Alternating rounds, medians. The whole-service number is bench/compare_checkouts.py.

    .venv/bin/python bench/protocol.py
"""

import asyncio
import statistics
import sys
import time

import uvicorn
import uvloop
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from housing_api.protocol import BoundedConfig, BoundedHttpProtocol, ConnectionBounds

BODY = b'[{"MedInc": 8.3252, "HouseAge": 42, "AveRooms": 6.98, "AveBedrms": 1.02, "Population": 322, "AveOccup": 2.55, "Latitude": 37.88, "Longitude": -122.23}]'
REQ = (
    b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(BODY), BODY)
)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


class Transport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.closed = False
        self.n = 0

    def write(self, data):
        self.n += 1

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def get_write_buffer_size(self):
        return 0


def make(kind):
    bounds = ConnectionBounds(10.0, 65536, 75)
    if kind == "bounded":
        config = BoundedConfig(app, bounds, lifespan="off", limit_concurrency=4096, log_level="warning")
        cls = BoundedHttpProtocol
    else:
        config = uvicorn.Config(
            app,
            lifespan="off",
            limit_concurrency=4096,
            loop="uvloop",
            log_level="warning",
            h11_max_incomplete_event_size=65536,
            timeout_keep_alive=75,
        )
        cls = HttpToolsProtocol if kind == "httptools" else H11Protocol
    config.load()
    return cls, config


async def run(kind, n):
    cls, config = make(kind)
    proto = cls(config=config, server_state=ServerState(), app_state={})
    t = Transport()
    proto.connection_made(t)
    start = time.process_time()
    for _ in range(n):
        proto.data_received(REQ)
        for _ in range(3):  # the request's task: receive, start, body
            await asyncio.sleep(0)
    used = time.process_time() - start
    assert t.n >= n, (kind, t.n)
    return used / n * 1e6


async def main():
    kinds = sys.argv[1:] or ["httptools", "bounded", "h11"]
    res = {k: [] for k in kinds}
    for r in range(7):
        for k in kinds if r % 2 == 0 else kinds[::-1]:
            res[k].append(await run(k, 20000))
    for k in kinds:
        print(f"{k:10s} median {statistics.median(res[k]):6.2f} us CPU/request  rounds {[round(x, 1) for x in res[k]]}")


uvloop.run(main())
