"""Request and response bodies, and the validator for POST /predict.

POST bodies are validated straight from bytes by pydantic-core (no json.loads, no intermediate
objects); every number must be a finite JSON number. Python's json module would accept NaN and
Infinity and `true` would pass as 1, so the fields are strict and reject non-finite values.
"""

from __future__ import annotations

import operator
import re
from typing import Annotated, Any, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, model_validator
from typing_extensions import TypedDict

from housing_api import FEATURES

# One table of rules: the JSON body (strict) and the GET query (parsed from strings) share it.
BOUNDS: dict[str, dict[str, Any]] = {
    "MedInc": {"gt": 0},
    "HouseAge": {"ge": 0},
    "AveRooms": {"gt": 0},
    "AveBedrms": {"ge": 0},
    "Population": {"ge": 0},
    "AveOccup": {"gt": 0},
    "Latitude": {"ge": -90, "le": 90},
    "Longitude": {"ge": -180, "le": 180},
}
DESCRIPTIONS: dict[str, str] = {
    "MedInc": "Median income in the block group, in tens of thousands of dollars (> 0).",
    "HouseAge": "Median house age in years (>= 0).",
    "AveRooms": "Average rooms per household (> 0).",
    "AveBedrms": "Average bedrooms per household (>= 0).",
    "Population": "Block group population (>= 0).",
    "AveOccup": "Average household members (> 0).",
    "Latitude": "Degrees north, in [-90, 90].",
    "Longitude": "Degrees east, in [-180, 180].",
}
assert tuple(BOUNDS) == FEATURES  # the order is the model's column order


def _strict(name: str) -> Any:
    return Annotated[
        float,
        Field(strict=True, allow_inf_nan=False, description=DESCRIPTIONS[name], **BOUNDS[name]),
    ]


class HouseFeatures(TypedDict):
    """One block group's features; extra keys are ignored."""

    __pydantic_config__ = ConfigDict(extra="ignore", title="HouseFeatures")  # type: ignore[misc]

    MedInc: _strict("MedInc")  # type: ignore[valid-type]
    HouseAge: _strict("HouseAge")  # type: ignore[valid-type]
    AveRooms: _strict("AveRooms")  # type: ignore[valid-type]
    AveBedrms: _strict("AveBedrms")  # type: ignore[valid-type]
    Population: _strict("Population")  # type: ignore[valid-type]
    AveOccup: _strict("AveOccup")  # type: ignore[valid-type]
    Latitude: _strict("Latitude")  # type: ignore[valid-type]
    Longitude: _strict("Longitude")  # type: ignore[valid-type]


SAMPLE_BATCH: list[dict[str, float]] = [
    {"MedInc": 8.3252, "HouseAge": 42, "AveRooms": 6.98, "AveBedrms": 1.02, "Population": 322, "AveOccup": 2.55, "Latitude": 37.88, "Longitude": -122.23},
    {"MedInc": 2.3252, "HouseAge": 20, "AveRooms": 2.98, "AveBedrms": 1.02, "Population": 322, "AveOccup": 2.55, "Latitude": 37.88, "Longitude": -122.23},
    {"MedInc": 3.3252, "HouseAge": 12, "AveRooms": 4.5, "AveBedrms": 3.02, "Population": 322, "AveOccup": 2.55, "Latitude": 37.88, "Longitude": -122.23},
    {"MedInc": 4.3252, "HouseAge": 42, "AveRooms": 6.98, "AveBedrms": 2.02, "Population": 123, "AveOccup": 2.55, "Latitude": 37.88, "Longitude": -122.23},
]  # fmt: skip
"""The course lab's sample batch."""


def _lax(name: str) -> Any:
    """The same rule for a query parameter, which arrives as a string to be parsed."""
    return Annotated[float, Field(allow_inf_nan=False, description=DESCRIPTIONS[name], **BOUNDS[name])]


# RFC 8259's number, in ASCII digits. A query value is parsed from text, and Python's float() (which
# pydantic's lax mode follows) also takes `1_2`, `+12`, ` 12 `, `12.`, `.5`, `inf` and non-ASCII digits:
# a GET row must be spelled as the same row in a POST body would be, or it is refused the same way.
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
JSON_NUMBER = re.compile(_NUMBER)
_ROW_OF_NUMBERS = re.compile(_NUMBER + ("," + _NUMBER) * (len(FEATURES) - 1))
_query_values = operator.itemgetter(*FEATURES)


def _json_numbers_only(data: Any) -> Any:
    """One regex over the joined row on the hit path, rather than a Python call per field (a comma
    inside a value makes more than eight numbers, so it cannot match). A value that is not a JSON
    number is handed on as one that float() refuses, so the error names its field like any other."""
    try:
        if _ROW_OF_NUMBERS.fullmatch(",".join(_query_values(data))):
            return data
    except (KeyError, TypeError):  # a field missing or not a string: the field validators say which
        pass
    if not isinstance(data, dict):
        return data
    bad = {k: "" for k in FEATURES if isinstance(data.get(k), str) and JSON_NUMBER.fullmatch(data[k]) is None}
    return {**data, **bad} if bad else data


_QUERY_FIELDS: dict[str, Any] = {name: (_lax(name), ...) for name in FEATURES}
HouseQuery = create_model(
    "HouseQuery",
    __doc__="GET /predict's query parameters: one row, the same rules as the JSON body.",
    __config__=ConfigDict(extra="ignore", json_schema_extra={"example": cast(Any, SAMPLE_BATCH[0])}),
    __validators__={"json_numbers_only": model_validator(mode="before")(_json_numbers_only)},  # type: ignore[dict-item]
    **_QUERY_FIELDS,
)


class BatchValidator:
    """Validates a POST /predict body (bytes) into rows; the row limit comes from Settings."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._adapter: TypeAdapter[list[HouseFeatures]] = TypeAdapter(
            Annotated[list[HouseFeatures], Field(min_length=1, max_length=max_rows)]
        )

    def validate(self, body: bytes) -> list[HouseFeatures]:
        """Raise pydantic.ValidationError when anything is wrong."""
        return self._adapter.validate_json(body)

    def openapi_schema(self) -> dict[str, Any]:
        """The body's JSON schema with the row schema inlined (no $defs to register)."""
        schema = self._adapter.json_schema()
        row = schema.pop("$defs")["HouseFeatures"]
        schema["items"] = row
        schema["example"] = SAMPLE_BATCH
        return schema


class PredictResponse(BaseModel):
    """A batch's predictions, in the shape the course lab's clients use."""

    query_key: str = Field(description="Hex digest of the canonical validated batch.")
    inputs: list[HouseFeatures] = Field(description="The validated rows, extra fields dropped.")
    prediction: list[float] = Field(description="Median house value per row, in $100,000s.")
    model_version: str = Field(description="sha256 of the model artifact that answered.")


class FieldError(BaseModel):
    """One problem with the request."""

    row: int | None = Field(description="Index of the offending row, when there is one.")
    field: str | None = Field(description="Name of the offending field, when there is one.")
    message: str


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    detail: str = Field(description="One line saying what is wrong.")
    errors: list[FieldError] = Field(default_factory=list)


class HealthBody(BaseModel):
    status: str = Field(examples=["healthy"])


class ReadyBody(BaseModel):
    status: str = Field(examples=["ready"])
    model_version: str
    cache: str = Field(
        description="ok; degraded (Redis out of use: unreachable, timing out or refusing the credentials; served from the model and the in-process tier); readonly or full (Redis answers reads but refuses writes: a replica or demoted master, or maxmemory with noeviction; the shared cache is not filling); or disabled (no REDIS_URL)."
    )
    cache_reason: str | None = Field(
        None,
        description="Why the cache is not ok: the reason label of housing_api_redis_errors_total (unreachable, timeout, noauth, readonly, oom).",
    )


def describe_validation_error(exc: ValidationError) -> ErrorBody:
    """Turn pydantic's errors into the service's error body, naming row index and field."""
    details = exc.errors(include_url=False, include_input=False)
    if details[0]["type"] == "list_type" and details[0]["loc"] == ():
        # Not an array at all: the one error there is, with its input, says which shape came instead.
        hint = _expected_array(exc.errors(include_url=False)[0]["input"])
        return ErrorBody(detail=hint, errors=[FieldError(row=None, field=None, message=hint)])
    errors = [_field_error(e["loc"], e["msg"]) for e in details]
    first = errors[0]
    where = ", ".join(p for p in (_row_text(first.row), _field_text(first.field)) if p)
    summary = f"{where}: {first.message}" if where else first.message
    if len(errors) > 1:
        summary += f" (and {len(errors) - 1} more)"
    return ErrorBody(detail=summary, errors=errors[:50])


EXAMPLE_ROW = '{"MedInc": 8.3252, "HouseAge": 42, ...}'


def _expected_array(body: Any) -> str:
    """What to send instead of a body that is not an array (the lab's clients sent two shapes)."""
    expected = f"the body must be a JSON array of rows, [{EXAMPLE_ROW}, ...]"
    if isinstance(body, dict) and len(body) == 1 and isinstance(next(iter(body.values())), list):
        key = next(iter(body))[:64]  # a hostile 1 MB key must not be echoed back
        return f'{expected}: send the list under "{key}" itself, not an object around it'
    if isinstance(body, dict):
        return f"{expected}: wrap a single row in [ ]"
    return expected


def _field_error(loc: tuple[int | str, ...], msg: str) -> FieldError:
    # pydantic locations look like (row, field) for the body, ("query", field) for GET.
    row = next((p for p in loc if isinstance(p, int)), None)
    field = next((p for p in loc if isinstance(p, str) and p not in ("body", "query")), None)
    if field is not None and len(field) > 64:
        field = field[:61] + "..."  # a hostile 1 MB key must not be echoed back
    return FieldError(row=row, field=field, message=msg)


def _row_text(row: int | None) -> str:
    return f"row {row}" if row is not None else ""


def _field_text(field: str | None) -> str:
    return f"field {field}" if field is not None else ""
