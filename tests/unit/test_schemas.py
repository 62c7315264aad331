"""schemas.py without HTTP: the strict rules a POST row passes, the GET query's same rules on text, and
the one-line messages a refused body gets (api.py only maps them to a 422: tests/unit/test_api.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from housing_api import FEATURES
from housing_api.schemas import SAMPLE_BATCH, BatchValidator, HouseQuery, describe_validation_error

ROW = SAMPLE_BATCH[0]


def refused(body: Any, max_rows: int = 10) -> ValidationError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ValidationError) as caught:
        BatchValidator(max_rows).validate(raw)
    return caught.value


def test_a_valid_batch_keeps_its_rows_as_floats_and_drops_extra_fields() -> None:
    rows = BatchValidator(10).validate(json.dumps([{**ROW, "note": "x"}]).encode())
    assert rows == [{f: float(ROW[f]) for f in FEATURES}]


@pytest.mark.parametrize(
    ("value", "kind"),
    [(True, "float_type"), ("8.3", "float_type"), (None, "float_type"), (0, "greater_than"), (-0.5, "greater_than")],
)
def test_a_value_is_a_json_number_in_its_bounds_never_coerced(value: Any, kind: str) -> None:
    errors = refused([{**ROW, "MedInc": value}]).errors()
    assert [(e["loc"], e["type"]) for e in errors] == [((0, "MedInc"), kind)]


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e309"])
def test_non_finite_numbers_are_refused(token: bytes) -> None:
    body = json.dumps([ROW]).replace("8.3252", "X").encode().replace(b"X", token)
    assert refused(body).errors()[0]["loc"] == (0, "MedInc")


@pytest.mark.parametrize(("field", "value"), [("Latitude", 90), ("Latitude", -90), ("Longitude", 180), ("HouseAge", 0)])
def test_bounds_are_inclusive_where_the_rule_says_so(field: str, value: float) -> None:
    assert BatchValidator(1).validate(json.dumps([{**ROW, field: value}]).encode())[0][field] == value  # type: ignore[literal-required]


def test_the_row_count_is_bounded_on_both_sides() -> None:
    assert refused([]).errors()[0]["type"] == "too_short"
    assert refused([ROW] * 3, max_rows=2).errors()[0]["type"] == "too_long"


def test_the_message_names_the_first_row_and_field_and_counts_the_rest() -> None:
    body = describe_validation_error(refused([ROW, {**ROW, "MedInc": -1, "Latitude": 91}]))
    assert body.detail == "row 1, field MedInc: Input should be greater than 0 (and 1 more)"
    assert [(e.row, e.field) for e in body.errors] == [(1, "MedInc"), (1, "Latitude")]


def test_a_missing_field_is_named() -> None:
    row = {k: v for k, v in ROW.items() if k != "AveOccup"}
    assert describe_validation_error(refused([row])).detail == "row 0, field AveOccup: Field required"


def test_at_most_fifty_errors_are_listed() -> None:
    body = describe_validation_error(refused([{"MedInc": -1}] * 10))
    assert len(body.errors) == 50 and body.detail.endswith("(and 79 more)")


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        ({"rows": [ROW]}, 'send the list under "rows" itself, not an object around it'),
        (ROW, "wrap a single row in [ ]"),
        ("text", 'HouseAge": 42, ...}, ...]'),
    ],
)
def test_a_body_that_is_not_an_array_says_what_to_send_instead(body: Any, hint: str) -> None:
    described = describe_validation_error(refused(body))
    assert described.detail.startswith("the body must be a JSON array of rows, [") and described.detail.endswith(hint)
    assert [(e.row, e.field) for e in described.errors] == [(None, None)]


def test_a_hostile_key_is_not_echoed_back_whole() -> None:
    wrapped = describe_validation_error(refused({"k" * 10_000: [ROW]}))
    assert '"' + "k" * 64 + '"' in wrapped.detail and "k" * 65 not in wrapped.detail


@pytest.mark.parametrize("value", ["1_2", "+12", " 12", "12.", ".5", "inf", "nan", "١٢", "0x10", ""])
def test_a_query_value_must_be_spelled_as_a_json_number(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        HouseQuery.model_validate({**{f: str(ROW[f]) for f in FEATURES}, "HouseAge": value})
    assert [e["loc"] for e in caught.value.errors()] == [("HouseAge",)]


@pytest.mark.parametrize("value", ["12", "-0", "1.5e1", "1E+1", "0.0"])
def test_every_json_spelling_of_a_number_is_a_query_value(value: str) -> None:
    query = HouseQuery.model_validate({**{f: str(ROW[f]) for f in FEATURES}, "HouseAge": value})
    assert query.HouseAge == float(value)  # type: ignore[attr-defined]


def test_the_query_keeps_the_bodys_bounds() -> None:
    with pytest.raises(ValidationError) as caught:
        HouseQuery.model_validate({**{f: str(ROW[f]) for f in FEATURES}, "Latitude": "91"})
    assert caught.value.errors()[0]["type"] == "less_than_equal"


def test_the_documented_body_schema_inlines_the_row_and_its_bounds() -> None:
    schema = BatchValidator(7).openapi_schema()
    assert (schema["type"], schema["minItems"], schema["maxItems"], schema["example"]) == ("array", 1, 7, SAMPLE_BATCH)
    assert schema["items"]["properties"]["MedInc"]["exclusiveMinimum"] == 0
    assert "$defs" not in schema and schema["items"]["required"] == list(FEATURES)
