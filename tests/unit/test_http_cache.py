"""http_cache.py: GET /predict's response cache, in process (its Redis side:
tests/integration/test_get_cache_redis.py)."""

from __future__ import annotations

from conftest import app_client

from housing_api.schemas import SAMPLE_BATCH

ROW = SAMPLE_BATCH[0]


def test_get_x_cache_says_hit_for_a_row_the_in_process_tier_served() -> None:
    with app_client() as c:
        c.post("/predict", json=[ROW])
        r = c.get("/predict", params=ROW)  # a response-cache miss, but its row was cached
        assert r.headers["X-Cache"] == "HIT"
        fresh = c.get("/predict", params={**ROW, "MedInc": 7.25})
        assert fresh.headers["X-Cache"] == "MISS"
