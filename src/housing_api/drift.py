"""Prediction drift: how far this process's model is from the stable version's, row by row.

A canary (or a shadow) started with STABLE_MODEL_VERSION compares a sampled share (DRIFT_SAMPLE) of
the rows its model computes with the stable version's answer for the same row, read from the shared
Redis tier under the stable version's keys (keys.key_namespace: the version is in every key, so the
two versions never read each other's answers by accident, only here, on purpose). The absolute
difference goes to housing_api_prediction_drift, and every sampled row is counted once in
housing_api_drift_rows_total{outcome}.

None of it is on the request path: the model stage, once it has answered a batch, draws which rows to
sample and queues them (a bounded queue: past it rows are dropped, and counted); a supervised stage
of its own (stages.py) reads a batch of them with one MGET, bounded by the Redis tier's timeout, and
decodes each value as the lookup does (a value is input, not truth).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from housing_api.cache import RedisTier, decode_value
from housing_api.inflight import Pending
from housing_api.keys import Row, cache_keys
from housing_api.metrics import COMPARED, DROPPED, INVALID, STABLE_MISSING, ServiceMetrics
from housing_api.tiers import add

DRIFT: Final = "drift"
"""The stage's name (housing_api_stage_up{stage}, housing_api_queue_rows{stage}, ...)."""
QUEUE_ROWS = 10_000
"""Sampled rows waiting to be compared; more are dropped (counted), never waited for."""

Sampled = tuple[Row, float]
"""A row and this model's answer for it."""


@dataclass(frozen=True)
class DriftConfig:
    """What /model shows, so an operator can check what the Canary passed in."""

    stable_model_version: str
    sample: float
    active: bool
    """Measured here: a stable version other than this process's own, a sample above 0, and Redis
    (where the stable version's answers live)."""

    @classmethod
    def of(cls, stable_version: str, sample: float, served_version: str, has_redis: bool) -> DriftConfig:
        own = bool(stable_version) and served_version.startswith(stable_version)
        return cls(stable_version, sample, bool(stable_version) and not own and sample > 0 and has_redis)


class DriftCheck:
    """What the drift stage does with a batch of sampled rows, and how rows get sampled."""

    name = DRIFT

    def __init__(self, redis: RedisTier, stable_namespace: str, sample: float, metrics: ServiceMetrics) -> None:
        self.redis = redis
        self.stable_namespace = stable_namespace
        self.sample = sample
        self._drift = metrics.prediction_drift
        self._rows = {o: metrics.drift_rows.labels(o) for o in (COMPARED, STABLE_MISSING, INVALID, DROPPED)}

    def sampled(self, answered: list[tuple[Pending, float]]) -> list[Sampled]:
        """The share of rows the model just answered that are to be compared (drawn independently)."""
        draw, share = random.random, self.sample
        return [(p.row, value) for p, value in answered if draw() < share]

    def dropped(self, n: int) -> None:
        add(self._rows[DROPPED], n)

    async def compare(self, batch: list[Sampled]) -> None:
        found = await self.redis.get_many(cache_keys(self.stable_namespace, (row for row, _ in batch)))
        if found is None:  # Redis failed or is backing off (counted by the tier as a Redis error)
            self.dropped(len(batch))
            return
        self._observe(batch, found)

    def _observe(self, batch: list[Sampled], found: Sequence[bytes | None]) -> None:
        missing = invalid = 0
        for (_, value), raw in zip(batch, found, strict=True):
            if raw is None:
                missing += 1
                continue
            stable = decode_value(raw)
            if stable is None:
                invalid += 1
                continue
            self._drift.observe(abs(value - stable))
        add(self._rows[STABLE_MISSING], missing)
        add(self._rows[INVALID], invalid)
        add(self._rows[COMPARED], len(batch) - missing - invalid)

    def failed(self, batch: list[Sampled], exc: BaseException) -> None:
        """The batch overran its bound or raised: its rows are dropped (the stage logs why)."""
        self.dropped(len(batch))
