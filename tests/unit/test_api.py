"""The HTTP contract of the service, with the in-process cache tier (no Redis)."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest
from conftest import app_client
from fastapi.testclient import TestClient

from housing_api import FEATURES
from housing_api.schemas import SAMPLE_BATCH
from housing_api_testing.harness import metric_value

GOOD = SAMPLE_BATCH[0]


def post(client: TestClient, body: object) -> httpx.Response:  # noqa: F821
    return client.post("/predict", content=json.dumps(body), headers={"Content-Type": "application/json"})


def test_sample_batch_gives_the_models_own_numbers(client: TestClient) -> None:
    r = post(client, SAMPLE_BATCH)
    assert r.status_code == 200
    body = r.json()
    estimator = client.app.state.service.model.estimator  # type: ignore[attr-defined]
    direct = estimator.predict(np.array([[float(row[f]) for f in FEATURES] for row in SAMPLE_BATCH]))
    assert len(body["prediction"]) == 4
    assert body["prediction"] == pytest.approx(direct.tolist(), abs=1e-9)
    assert body["model_version"] == client.app.state.service.model.version  # type: ignore[attr-defined]
    assert body["inputs"] == [{f: float(row[f]) for f in FEATURES} for row in SAMPLE_BATCH]
    assert len(body["query_key"]) == 32


def test_repeated_batch_is_a_hit_and_new_rows_are_a_miss(client: TestClient) -> None:
    assert post(client, SAMPLE_BATCH).headers["X-Cache"] == "MISS"
    again = post(client, SAMPLE_BATCH)
    assert again.headers["X-Cache"] == "HIT"
    mixed = post(client, [*SAMPLE_BATCH[:2], {**GOOD, "MedInc": 9.1}])
    assert mixed.headers["X-Cache"] == "PARTIAL"


def test_cached_answers_equal_computed_answers(client: TestClient) -> None:
    first, second = post(client, SAMPLE_BATCH).json(), post(client, SAMPLE_BATCH).json()
    assert first == second


def test_extra_fields_are_ignored(client: TestClient) -> None:
    plain = post(client, [GOOD]).json()
    extra = post(client, [{**GOOD, "Extra_Param": "Val", "nested": {"a": [1]}}]).json()
    assert extra == plain
    assert "Extra_Param" not in extra["inputs"][0]


def test_key_order_and_int_vs_float_give_the_same_query_key(client: TestClient) -> None:
    a = post(client, [GOOD]).json()
    reordered = dict(reversed(list({**GOOD, "HouseAge": 42.0}.items())))
    b = post(client, [reordered]).json()
    assert a["query_key"] == b["query_key"]


def test_one_invalid_row_rejects_the_whole_batch_naming_row_and_field(client: TestClient) -> None:
    r = post(client, [GOOD, {**GOOD, "MedInc": -1}])
    assert r.status_code == 422
    body = r.json()
    assert body["errors"][0]["row"] == 1
    assert body["errors"][0]["field"] == "MedInc"
    assert "row 1" in body["detail"] and "MedInc" in body["detail"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("MedInc", 0), ("HouseAge", -1), ("AveRooms", 0), ("AveBedrms", -0.1),
        ("Population", -5), ("AveOccup", 0), ("Latitude", 90.01), ("Latitude", -91),
        ("Longitude", 180.5), ("Longitude", -181),
        ("MedInc", True), ("HouseAge", False), ("MedInc", None), ("MedInc", "8.3"),
        ("MedInc", "abc"), ("MedInc", [1]), ("MedInc", {"v": 1}),
    ],
)  # fmt: skip
def test_out_of_range_and_wrongly_typed_values_are_422(client: TestClient, field: str, value: object) -> None:
    r = post(client, [GOOD, {**GOOD, field: value}])
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0] == {"row": 1, "field": field, "message": r.json()["errors"][0]["message"]}


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e309", "-1e309"])
def test_non_finite_numbers_are_422_even_though_python_json_accepts_them(client: TestClient, token: str) -> None:
    raw = json.dumps([GOOD]).replace("8.3252", token)
    r = client.post("/predict", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "MedInc"


def test_boundary_values_are_accepted(client: TestClient) -> None:
    edge = {**GOOD, "HouseAge": 0, "AveBedrms": 0, "Population": 0, "Latitude": -90, "Longitude": 180}
    r = post(client, [edge])
    assert r.status_code == 200
    assert math.isfinite(r.json()["prediction"][0])


def test_missing_field_is_422(client: TestClient) -> None:
    row = {k: v for k, v in GOOD.items() if k != "Latitude"}
    r = post(client, [row])
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "Latitude"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [(b"[]", "at least 1"), (b'{"MedInc": 1}', "array"), (b"[1, 2", "Invalid JSON"), (b"", "Invalid JSON"),
     (b'"text"', "array"), (b"[[1,2,3]]", "row 0"), (b"\xff\xfe[]", "Invalid JSON")],
)  # fmt: skip
def test_empty_non_array_and_invalid_json_bodies_are_422(client: TestClient, raw: bytes, needle: str) -> None:
    r = client.post("/predict", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert needle in r.json()["detail"]


def test_batch_limit_is_enforced() -> None:
    with app_client(max_batch_rows=3) as c:
        assert post(c, [GOOD] * 3).status_code == 200
        r = post(c, [GOOD] * 4)
        assert r.status_code == 422
        assert "at most 3" in r.json()["detail"]


def test_default_batch_limit_is_1000(client: TestClient) -> None:
    rows = [{**GOOD, "MedInc": 1 + i / 1000} for i in range(1000)]
    assert len(post(client, rows).json()["prediction"]) == 1000
    assert post(client, [*rows, GOOD]).status_code == 422


def test_duplicate_rows_in_one_batch_get_the_same_prediction(client: TestClient) -> None:
    r = post(client, [GOOD, {**GOOD, "MedInc": 2.0}, GOOD]).json()
    assert r["prediction"][0] == r["prediction"][2]


def test_wrong_content_type_is_415(client: TestClient) -> None:
    r = client.post("/predict", content=json.dumps([GOOD]), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert "application/json" in r.json()["detail"]


def test_oversized_body_is_413() -> None:
    with app_client(max_body_bytes=2048) as c:
        r = post(c, [GOOD] * 40)
        assert r.status_code == 413
        assert "2048" in r.json()["detail"]


def test_health_livez_readyz_and_model(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "healthy"}
    assert client.get("/livez").status_code == 200
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["cache"] == "disabled"
    meta = client.get("/model").json()
    assert meta["holdout_r2"] >= 0.85
    assert meta["features"] == list(FEATURES)
    assert meta["version"] == ready["model_version"]


def test_unknown_route_has_the_error_shape(client: TestClient) -> None:
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.json() == {"detail": "Not Found", "errors": []}


def test_get_predict_answers_one_row_like_post(client: TestClient) -> None:
    got = client.get("/predict", params=GOOD)
    assert got.status_code == 200
    posted = post(client, [GOOD]).json()
    assert got.json()["prediction"] == posted["prediction"]
    assert got.json()["query_key"] == posted["query_key"]


def test_get_predict_etag_and_304(client: TestClient) -> None:
    first = client.get("/predict", params=GOOD)
    etag = first.headers["ETag"]
    assert "max-age=" in first.headers["Cache-Control"]
    second = client.get("/predict", params=GOOD)
    assert second.headers["ETag"] == etag  # the same whether computed or served from the cache
    assert second.headers["X-Cache"] == "HIT"
    not_modified = client.get("/predict", params=GOOD, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    changed = client.get("/predict", params=GOOD, headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200


def test_get_predict_etag_is_the_same_in_another_app_instance() -> None:
    with app_client() as a, app_client() as b:
        assert a.get("/predict", params=GOOD).headers["ETag"] == b.get("/predict", params=GOOD).headers["ETag"]


@pytest.mark.parametrize(
    ("field", "value"), [("MedInc", "nan"), ("MedInc", "inf"), ("MedInc", "true"), ("Latitude", "91"), ("MedInc", "")]
)
def test_get_predict_validates_like_post(client: TestClient, field: str, value: str) -> None:
    r = client.get("/predict", params={**GOOD, field: value})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == field


def test_openapi_has_an_example_for_every_endpoint(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    post_op = spec["paths"]["/predict"]["post"]
    body_schema = post_op["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["example"] == SAMPLE_BATCH and body_schema["maxItems"] == 1000
    assert "example" in post_op["responses"]["200"]["content"]["application/json"]
    assert all("description" in p for p in spec["paths"]["/predict"]["get"]["parameters"])
    for path in ("/health", "/livez", "/readyz", "/model"):
        assert spec["paths"][path]["get"]["description"]
    assert client.get("/docs").status_code == 200


def test_metrics_are_exported(client: TestClient) -> None:
    post(client, SAMPLE_BATCH)
    text = client.get("/metrics").text
    assert metric_value(text, "housing_api_rows_served_total", source="model") == 4
    assert "http_request_duration_seconds_bucket" in text


# -- hostile clients: HEAD, encodings, numbers, redirects, error bodies ---------------------------
def test_head_answers_wherever_get_does_with_the_same_headers_and_no_body(client: TestClient) -> None:
    documented = [path for path, ops in client.get("/openapi.json").json()["paths"].items() if "get" in ops]
    assert set(documented) == {"/predict", "/health", "/livez", "/readyz", "/model"}
    for path in [*documented, "/metrics", "/docs", "/openapi.json"]:
        params = GOOD if path == "/predict" else None
        same = {"x-request-id": "one-id"}  # else each gets an id of its own
        got, head = client.get(path, params=params, headers=same), client.head(path, params=params, headers=same)
        assert (path, head.status_code) == (path, got.status_code) == (path, 200)
        assert head.content == b""
        assert set(head.headers) == set(got.headers), path
        if path not in ("/metrics", "/predict"):  # a scrape changes the next; X-Cache says HIT the second time
            assert head.headers == got.headers, path
    assert client.head("/predict", params=GOOD).headers["ETag"] == client.get("/predict", params=GOOD).headers["ETag"]


def test_head_is_in_the_allow_header_and_not_a_documented_operation(client: TestClient) -> None:
    assert client.put("/health").headers["Allow"] == "GET, HEAD"
    assert client.put("/predict").headers["Allow"] == "GET, HEAD, POST"
    assert all("head" not in ops for ops in client.get("/openapi.json").json()["paths"].values())


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "deflate", "br", "zstd", "gzip, identity"])
def test_an_encoded_body_is_415_naming_the_encoding(client: TestClient, encoding: str) -> None:
    body = gzip.compress(json.dumps([GOOD]).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == 415
    assert r.json()["detail"] == "Content-Encoding is not supported: send the JSON body unencoded"


def test_an_identity_encoded_body_is_accepted(client: TestClient) -> None:
    headers = {"Content-Type": "application/json", "Content-Encoding": "identity"}
    assert client.post("/predict", content=json.dumps([GOOD]), headers=headers).status_code == 200


@pytest.mark.parametrize(
    "value",
    ["1_2", "+12", " 12", "12 ", "12\n", "0x1p3", "0x10", "inf", "-inf", "nan", "Infinity", "1e999", "12.", ".5",
     "1e", "1.5e+", "--1", "1,5", "\u0661\u0662", "\uff11\uff12", "012", "true", ""],
)  # fmt: skip
def test_get_predict_numbers_are_exactly_json_numbers(client: TestClient, value: str) -> None:
    r = client.get("/predict", params={**GOOD, "MedInc": value})
    assert r.status_code == 422, value
    assert r.json()["errors"][0]["field"] == "MedInc"


@pytest.mark.parametrize(
    ("field", "value"),
    [("MedInc", "8.3252"), ("MedInc", "8.3252e0"), ("MedInc", "83252E-4"), ("MedInc", "0.83252e+1"),
     ("MedInc", "8.32520"), ("HouseAge", "42"), ("HouseAge", "4.2e1"), ("Longitude", "-122.23"),
     ("Population", "0.322E3")],
)  # fmt: skip
def test_get_predict_takes_every_json_spelling_of_a_number(client: TestClient, field: str, value: str) -> None:
    r = client.get("/predict", params={**GOOD, field: value})
    assert r.status_code == 200, r.text
    assert r.json()["prediction"] == post(client, [GOOD]).json()["prediction"]


def test_get_predict_parameters_still_document_their_bounds(client: TestClient) -> None:
    params = client.get("/openapi.json").json()["paths"]["/predict"]["get"]["parameters"]
    schemas = {p["name"]: p["schema"] for p in params}
    assert schemas["MedInc"]["exclusiveMinimum"] == 0 and schemas["Latitude"]["maximum"] == 90
    assert all(s["type"] == "number" for s in schemas.values())


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_a_trailing_slash_is_404_and_never_redirects_to_the_clients_host(client: TestClient, method: str) -> None:
    r = client.request(method, "/predict/", params=GOOD, headers={"Host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers
    if method != "HEAD":
        assert r.json() == {"detail": "Not Found", "errors": []}


LEAKS = ("Traceback", "site-packages", ".py", "File ", "uvicorn", "starlette", "fastapi", "pydantic", "python")


def test_every_error_body_has_the_shape_and_leaks_nothing() -> None:
    with app_client(max_body_bytes=2048) as c:
        json_headers = {"Content-Type": "application/json"}
        answers = [
            c.get("/nope"), c.get("/predict/"), c.get("/docs/static/nope.js"), c.delete("/predict"),
            c.request("TRACE", "/health"), c.get("/predict", params={**GOOD, "MedInc": "1_2"}), c.get("/predict"),
            c.post("/predict", content=b"[", headers=json_headers),
            c.post("/predict", content=b"\xff", headers=json_headers),
            c.post("/predict", content=b"[]", headers={"Content-Type": "text/plain"}),
            c.post("/predict", content=b"[]", headers={**json_headers, "Content-Encoding": "gzip"}),
            c.post("/predict", content=b"[" + b" " * 4096 + b"]", headers=json_headers),
            c.post("/predict", content=json.dumps([{**GOOD, "x" * 100: 1, "MedInc": "a"}]), headers=json_headers),
        ]  # fmt: skip
    assert sorted({r.status_code for r in answers}) == [404, 405, 413, 415, 422]
    for r in answers:
        assert r.headers["content-type"] == "application/json", r.request
        assert set(r.json()) == {"detail", "errors"}, r.request
        assert not [leak for leak in LEAKS if leak.lower() in r.text.lower()], (r.request, r.text)
