"""The stack's own limit: a raw ASGI app on the service's server stack, answering a constant.

uvicorn + httptools + uvloop, as the service runs; no framework, no validation library, no metrics.
POST /predict reads the body, parses it with orjson, checks that every row has the eight features
as finite numbers (a plain Python loop) and answers in the service's shape with constant
predictions (the rows echoed, as the ceiling app does). Nothing
that parses and checks the same body on this server can be cheaper; `make bench` reports every
scenario's distance to it beside its distance to the ceiling app (bench/ceiling_app.py).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import orjson
import uvicorn

FEATURES = ("MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude")
JSON_HEADERS = [(b"content-type", b"application/json")]
READY = orjson.dumps({"status": "ready"})


def valid(rows: Any) -> bool:
    if not isinstance(rows, list) or not rows:
        return False
    for row in rows:
        if not isinstance(row, dict):
            return False
        for name in FEATURES:
            value = row.get(name)
            if type(value) not in (int, float) or not math.isfinite(value):
                return False
    return True


async def read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def answer(send: Any, status: int, body: bytes) -> None:
    headers = [*JSON_HEADERS, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/readyz":
        await answer(send, 200, READY)
        return
    if scope["path"] != "/predict" or scope["method"] != "POST":
        await answer(send, 404, b'{"detail":"Not Found"}')
        return
    try:
        rows = orjson.loads(await read_body(receive))
    except orjson.JSONDecodeError:
        rows = None
    if not valid(rows):
        await answer(send, 422, b'{"detail":"invalid"}')
        return
    body = orjson.dumps(
        {"query_key": "0" * 32, "inputs": rows, "prediction": [1.0] * len(rows), "model_version": "raw"}
    )
    await answer(send, 200, body)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8200)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", access_log=False,
                log_level="warning", lifespan="off")  # fmt: skip


if __name__ == "__main__":
    main()
