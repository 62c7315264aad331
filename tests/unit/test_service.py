"""The POST /predict body is byte for byte what it was before the batch path was vectorised.

The response used to be built from canonical_row and one new dict per row; now it echoes the
validated rows. These tests rebuild the old body independently and compare bytes, so an int
echoed as 42 instead of 42.0, a -0.0, an extra key or a changed key order would all fail here.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from housing_api import FEATURES
from housing_api.schemas import SAMPLE_BATCH

ROW = SAMPLE_BATCH[0]
BATCHES: dict[str, list[dict[str, Any]]] = {
    "sample batch": SAMPLE_BATCH,
    "ints": [{**ROW, "HouseAge": 42, "Population": 322, "MedInc": 8}],
    "reversed key order and extra keys": [{"Extra": [1, 2], **dict(reversed(list(ROW.items())))}, SAMPLE_BATCH[1]],
    "negative zeros": [{**ROW, "HouseAge": -0.0, "Latitude": -0.0}, {**ROW, "Longitude": -0.0}, ROW],
    "extreme values": [{**ROW, "Population": 1e300, "AveBedrms": 5e-324}],
}


def old_body(rows: list[dict[str, Any]], prediction: list[float], version: str) -> bytes:
    # Independent of keys.py: float64 values in feature order, -0.0 folded, digest of the packed rows.
    canonical = [tuple(float(r[name]) + 0.0 for name in FEATURES) for r in rows]
    packed = b"".join(struct.pack("<8d", *row) for row in canonical)
    return orjson.dumps(
        {
            "query_key": hashlib.blake2b(packed, digest_size=16).hexdigest(),
            "inputs": [dict(zip(FEATURES, row, strict=True)) for row in canonical],
            "prediction": prediction,
            "model_version": version,
        }
    )


@pytest.mark.parametrize("name", list(BATCHES))
def test_post_predict_body_is_byte_identical_to_the_per_row_build(client: TestClient, name: str) -> None:
    rows = BATCHES[name]
    for _ in range(2):  # a miss, then the same rows from the in-process tier
        response = client.post("/predict", content=json.dumps(rows), headers={"Content-Type": "application/json"})
        assert response.status_code == 200
        version = client.app.state.service.model.version  # type: ignore[attr-defined]
        assert response.content == old_body(rows, response.json()["prediction"], version)


def test_negative_zero_is_echoed_as_zero(client: TestClient) -> None:
    response = client.post("/predict", content=json.dumps([{**ROW, "HouseAge": -0.0}]))
    assert b'"HouseAge":0.0' in response.content
    assert b"-0.0" not in response.content
