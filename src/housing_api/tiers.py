"""The links of the resolution chain, each of one shape: a batch of rows in, an answer or None per row out.

A tier knows nothing about requests, queues or the single-flight map: `answer` gets rows that
missed every tier before it and says what it knows of each; the resolver (batching.py) completes
the answered rows, passes the rest to the next tier and writes behind what the model computed. The
chain itself, memory -> Redis -> model with writes behind to Redis, is written once, in app.py.

The in-process tier is the chain's head and has no class here: it is read on the request path
itself (no await, no allocation per hit), before a row joins the single-flight map.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
from prometheus_client import Counter

from housing_api.cache import RedisTier, decode_value, encode_values
from housing_api.inflight import Pending
from housing_api.keys import cache_keys, row_digest, rows_matrix
from housing_api.metrics import ERROR, HIT, INVALID, MISS, MODEL, REDIS, REDIS_WRITE, SET, ServiceMetrics, Source
from housing_api.model import Model
from housing_api.redis_faults import classify

log = logging.getLogger(__name__)
INVALID_LOG_EVERY_S = 10.0


def add(counter: Counter, n: int) -> None:
    """counter.inc(n), skipped for 0: every increment takes the counter's lock."""
    if n:
        counter.inc(n)


class Tier(Protocol):
    """A link of the chain: answers what it can of a batch; a None passes the row on."""

    name: Source
    """Where the rows it answers are served from; its stage has the same name."""

    def usable(self) -> bool:
        """False while the tier cannot answer anything (Redis absent or backing off): skipped."""

    async def answer(self, batch: list[Pending]) -> Sequence[float | None]:
        """A value or None for each row, in batch order."""

    def failed(self, exc: BaseException) -> bool:
        """`answer` raised or overran its bound: True passes the batch on as misses, False fails
        its rows (their requests get a 500 naming the stage)."""

    def close(self) -> None:
        """At shutdown, after the last batch."""


class RedisLookup:
    """The shared tier: one MGET per batch. A Redis failure or a value this release would not have
    written is a miss (counted), never an error for the client."""

    name: Source = REDIS

    def __init__(self, redis: RedisTier | None, namespace: str, metrics: ServiceMetrics) -> None:
        self.redis = redis
        self.namespace = namespace
        self._outcomes = {o: metrics.cache_lookups.labels(REDIS, o) for o in (HIT, MISS, ERROR, INVALID)}
        self._invalid_logged_at = float("-inf")

    def usable(self) -> bool:
        return self.redis is not None and self.redis.usable()

    async def answer(self, batch: list[Pending]) -> Sequence[float | None]:
        assert self.redis is not None
        keys = cache_keys(self.namespace, [p.row for p in batch])
        for pending, key in zip(batch, keys, strict=True):
            pending.key = key  # kept for the write-behind, should the model answer the row
        found = await self.redis.get_many(keys)
        if found is None:
            self._outcomes[ERROR].inc(len(batch))
            return [None] * len(batch)
        values = [None if raw is None else decode_value(raw) for raw in found]
        unanswered, absent = values.count(None), found.count(None)
        self._count(len(values) - unanswered, absent, unanswered - absent)
        return values

    def _count(self, hits: int, misses: int, invalid: int) -> None:
        add(self._outcomes[HIT], hits)
        add(self._outcomes[MISS], misses)
        if invalid:
            self._outcomes[INVALID].inc(invalid)
            now = time.monotonic()
            if now - self._invalid_logged_at > INVALID_LOG_EVERY_S:  # once per burst, not once per row
                self._invalid_logged_at = now
                log.warning(
                    "ignored %d Redis values under %s* that are not predictions this release wrote; "
                    "recomputing and overwriting them", invalid, self.namespace,
                )  # fmt: skip

    def failed(self, exc: BaseException) -> bool:
        # A cache failure is a miss: the rows go on to the model. Only an exception type nothing
        # expects (the stage's loop ends and is restarted) fails them.
        return isinstance(exc, Exception)

    def close(self) -> None:
        """The Redis client is the lifespan's to close."""


class ModelCall:
    """The last tier: one vectorised model call per batch; answers every row it is given."""

    name: Source = MODEL

    def __init__(self, model: Model, metrics: ServiceMetrics, inline_rows: int) -> None:
        self.model = model
        self.metrics = metrics
        self.inline_rows = inline_rows if model.fast_path else 0
        # One inference thread: the model call releases the GIL, and the event loop stays free.
        self._executor = self._new_executor()

    @staticmethod
    def _new_executor() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    def usable(self) -> bool:
        return True

    async def answer(self, batch: list[Pending]) -> Sequence[float | None]:
        X = rows_matrix([p.row for p in batch])
        started = time.perf_counter()
        if len(batch) <= self.inline_rows:
            # Tiny batches on the compiled path take microseconds: a thread hop costs more.
            predictions = self.model.predict(X)
        else:
            predictions = await asyncio.get_running_loop().run_in_executor(self._executor, self.model.predict, X)
        if not np.all(np.isfinite(predictions)):
            raise ValueError(f"the model returned a non-finite prediction for a batch of {len(batch)}")
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        self.metrics.rows_per_call.observe(len(batch))
        values: list[float] = predictions.tolist()
        return values

    def failed(self, exc: BaseException) -> bool:
        if isinstance(exc, TimeoutError):
            # The call is still running in the inference thread and would hold it: give the next
            # batches a fresh thread; the old one ends when (if) the call returns.
            self.close()
            self._executor = self._new_executor()
        return False

    def close(self) -> None:
        # A hung model call keeps its thread; do not wait for it (the server's hard shutdown
        # deadline ends the process if that thread never returns).
        self._executor.shutdown(wait=False, cancel_futures=True)


class RedisWrites:
    """Behind the chain: what the model computed, stored in Redis, one EVALSHA per batch. Best
    effort: the rows are answered already, so a failure is counted and the batch dropped."""

    name = REDIS_WRITE

    def __init__(self, redis: RedisTier | None, namespace: str, metrics: ServiceMetrics) -> None:
        self.redis = redis
        self.namespace = namespace
        self._errors = metrics.redis_errors

    @property
    def timeout_s(self) -> float:
        """Bound of one write round trip (0 without Redis)."""
        return self.redis.write_timeout_s if self.redis is not None else 0.0

    def enabled(self) -> bool:
        return self.redis is not None

    def items(self, answered: list[tuple[Pending, float]]) -> list[tuple[str, bytes]]:
        ns = self.namespace
        encoded = encode_values([value for _, value in answered])
        return [(p.key or ns + row_digest(p.row), raw) for (p, _), raw in zip(answered, encoded, strict=True)]

    async def write(self, items: list[tuple[str, bytes]]) -> None:
        if self.redis is not None:
            await self.redis.set_many(items)

    def failed(self, items: list[tuple[str, bytes]], exc: BaseException) -> None:
        # set_many counts its own failures; this is the stage's bound or an exception around it.
        self._errors.labels(SET, classify(exc)).inc()
