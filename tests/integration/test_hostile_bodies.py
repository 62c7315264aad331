"""Hostile and oversized request bodies get a clear 4xx, never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from conftest import app_client
from fastapi.testclient import TestClient

from housing_api.schemas import SAMPLE_BATCH

# serial: deadlines and shed load under a slow model; parallel workers on the same cores would skew
# them (Makefile, test).
pytestmark = pytest.mark.serial

GOOD = SAMPLE_BATCH[0]
GOOD_JSON = json.dumps(GOOD)


def hostile_bodies() -> list[tuple[str, bytes, str]]:
    """(case, body, content type): the issue's list of broken and crafted requests."""
    json_type = "application/json"
    extra = {**GOOD, **{f"extra_{i}": i for i in range(10_000)}}
    return [
        ("invalid JSON", b"[{", json_type),
        ("invalid UTF-8", b'[{"MedInc": "\xff\xfe"}]', json_type),
        ("wrong Content-Type", json.dumps([GOOD]).encode(), "application/x-www-form-urlencoded"),
        ("NaN", f"[{GOOD_JSON.replace('8.3252', 'NaN')}]".encode(), json_type),
        ("Infinity", f"[{GOOD_JSON.replace('8.3252', 'Infinity')}]".encode(), json_type),
        ("1e309", f"[{GOOD_JSON.replace('8.3252', '1e309')}]".encode(), json_type),
        ("number as a non-numeric string", json.dumps([{**GOOD, "MedInc": "eight"}]).encode(), json_type),
        ("boolean", json.dumps([{**GOOD, "HouseAge": True}]).encode(), json_type),
        ("null", json.dumps([{**GOOD, "HouseAge": None}]).encode(), json_type),
        ("nested arrays", json.dumps([[GOOD]]).encode(), json_type),
        ("deeply nested arrays", b"[" * 100_000 + b"]" * 100_000, json_type),
        ("object instead of array", json.dumps(GOOD).encode(), json_type),
        ("10,000 extra fields on a row", json.dumps([extra]).encode(), json_type),
        ("a key of 1 MB", json.dumps([{**GOOD, "k" * 1_000_000: 1}]).encode(), json_type),
        ("a missing-field key of 1 MB", json.dumps([{"k" * 1_000_000: 1}]).encode(), json_type),
        ("300,000 empty rows", b"[" + b"{}," * 300_000 + b"{}]", json_type),
        ("a number with a million digits", b'[{"MedInc": ' + b"1" * 1_000_000 + b"}]", json_type),
    ]


@pytest.mark.parametrize(("case", "body", "content_type"), hostile_bodies(), ids=[c[0] for c in hostile_bodies()])
def test_hostile_input_gets_a_clear_4xx_never_a_5xx(
    client: TestClient, case: str, body: bytes, content_type: str
) -> None:
    r = client.post("/predict", content=body, headers={"Content-Type": content_type})
    if case in ("10,000 extra fields on a row", "a key of 1 MB"):
        assert r.status_code == 200  # extra fields are ignored, whatever their number or size
        return
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text[:200])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail
    assert len(r.content) < 20_000  # a hostile key is never echoed back in full


def test_too_many_rows_is_422(client: TestClient) -> None:
    r = client.post("/predict", json=[GOOD] * 1001)
    assert r.status_code == 422 and "at most 1000" in r.json()["detail"]


def test_chunked_body_over_the_limit_is_413_without_reading_it_all() -> None:
    sent = []

    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(10_000):
            sent.append(1)
            yield (GOOD_JSON + ",").encode() * 10

    with app_client(max_body_bytes=64 * 1024) as c:
        r = c.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "65536" in r.json()["detail"]


def test_declared_oversized_body_is_refused_before_reading() -> None:
    with app_client(max_body_bytes=1024) as c:
        r = c.post("/predict", content=b"[" + b" " * 5000 + b"]", headers={"Content-Type": "application/json"})
        assert r.status_code == 413
