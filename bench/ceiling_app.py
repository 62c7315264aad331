"""The ceiling app: the service's request schema and instrumentation, returning a constant.

No real service can beat an endpoint that validates the same body, goes through the same
prometheus-fastapi-instrumentator middleware and the same server settings, and then does nothing.
`make bench` reports the service's numbers as a ratio of this app's, measured in the same run.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_fastapi_instrumentator import Instrumentator

from housing_api.metrics import LATENCY_BUCKETS
from housing_api.schemas import HouseFeatures


def create_ceiling_app() -> FastAPI:
    app = FastAPI(title="ceiling")

    @app.post("/predict")
    async def predict(rows: list[HouseFeatures]) -> dict[str, Any]:
        return {"query_key": "0" * 32, "inputs": rows, "prediction": [1.0] * len(rows), "model_version": "ceiling"}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    Instrumentator(registry=CollectorRegistry(), excluded_handlers=["/metrics"]).instrument(
        app, latency_lowr_buckets=LATENCY_BUCKETS, latency_highr_buckets=LATENCY_BUCKETS
    ).expose(app)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(
        create_ceiling_app(),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
