"""The prediction use case: validated rows in, predictions and cache status out.

Admission is bounded here: past MAX_INFLIGHT_REQUESTS a request is refused at once (429) instead
of queueing without limit; the resolver bounds the rows waiting for Redis and the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

import orjson

from housing_api import FEATURES
from housing_api.batch_json import decode_batch, encode_inputs
from housing_api.batching import Resolver
from housing_api.drift import DriftConfig
from housing_api.errors import Overloaded
from housing_api.keys import Row, canonical_batch, row_values, split_rows
from housing_api.metrics import INFLIGHT_FULL, MODEL, ServiceMetrics, Source
from housing_api.model import Model
from housing_api.schemas import BatchValidator, HouseFeatures

CacheStatus = Literal["HIT", "MISS", "PARTIAL"]


def cache_status(sources: list[Source]) -> CacheStatus:
    """HIT: every row came from a cache tier; MISS: every row from the model."""
    from_model = sources.count(MODEL)
    if from_model == 0:
        return "HIT"
    return "MISS" if from_model == len(sources) else "PARTIAL"


class Admission:
    """PredictionService.admitted()'s context manager: a class rather than @asynccontextmanager,
    whose generator machinery cost more than the count itself on every request."""

    __slots__ = ("service",)

    def __init__(self, service: PredictionService) -> None:
        self.service = service

    async def __aenter__(self) -> None:
        service = self.service
        if service.inflight >= service.max_inflight:
            service.metrics.rejected.labels(INFLIGHT_FULL).inc()
            raise Overloaded(f"more than {service.max_inflight} prediction requests in flight")
        service.inflight += 1

    async def __aexit__(self, *_: object) -> None:
        self.service.inflight -= 1


class PredictionService:
    """What the routes call; owned by the app's lifespan."""

    def __init__(
        self,
        model: Model,
        resolver: Resolver,
        validator: BatchValidator,
        metrics: ServiceMetrics,
        max_inflight: int,
        drift: DriftConfig | None = None,
    ) -> None:
        self.model = model
        self.drift = drift or DriftConfig("", 0.0, False)
        """The drift comparison's settings, for /model."""
        self.resolver = resolver
        self.validator = validator
        self.metrics = metrics
        self.max_inflight = max_inflight
        self.inflight = 0
        self._version_json = orjson.dumps(model.version)
        # Read when scraped: exact, and no gauge lock taken twice per request.
        metrics.inflight.set_function(lambda: self.inflight)

    def admitted(self) -> Admission:
        """`async with service.admitted():` counts the request in flight, or refuses it (429)
        when the service is full."""
        return Admission(self)

    async def predict_rows(self, inputs: Sequence[HouseFeatures]) -> tuple[dict[str, Any], CacheStatus]:
        """Answer validated rows (the validator's or HouseQuery's output, never raw client JSON)."""
        batch = canonical_batch(inputs)
        values, sources = await self.resolver.predict(batch.rows)
        body = {
            "query_key": batch.query_key,
            "inputs": self._echo(inputs, batch.rows, batch.folded_negative_zero),
            "prediction": values,
            "model_version": self.model.version,
        }
        return body, cache_status(sources)

    @staticmethod
    def _echo(inputs: Sequence[HouseFeatures], rows: list[Row], folded: bool) -> Sequence[HouseFeatures]:
        """The canonical rows as objects. Validated rows already are that (float values in FEATURES
        order, extra keys dropped), so they are echoed as they are, without a new dict per row;
        only a -0.0, which the canonical row holds as 0.0, needs the rows rebuilt."""
        if not folded:
            return inputs
        return [cast(HouseFeatures, dict(zip(FEATURES, row_values(row), strict=True))) for row in rows]

    async def predict_body(self, body: bytes) -> tuple[bytes, CacheStatus]:
        """Validate a POST /predict body (raises pydantic.ValidationError) and answer it."""
        data = decode_batch(body, self.validator.max_rows)
        if data is None:  # not certainly valid: the validator's rows, or its ValidationError
            result, status = await self.predict_rows(self.validator.validate(body))
            return orjson.dumps(result), status
        batch = split_rows(data)
        values, sources = await self.resolver.predict(batch.rows)
        # orjson.dumps of predict_rows' dict, written in parts: the rows are never dicts here.
        content = b"".join((
            b'{"query_key":"', batch.query_key.encode(), b'","inputs":', encode_inputs(data),
            b',"prediction":', orjson.dumps(values), b',"model_version":', self._version_json, b"}",
        ))  # fmt: skip
        return content, cache_status(sources)
