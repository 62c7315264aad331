"""The row resolver: in-process tier, then Redis, then the model, batched across requests.

A row a request could not answer from the in-process tier joins the single-flight map
(inflight.py) and travels through three supervised stages (stages.py): `lookup` (one MGET per
micro-batch), `model` (one vectorised call per micro-batch) and `write` (one EVALSHA per
micro-batch). Batching is adaptive: a stage takes whatever is queued the moment it is free, so a
lone request never waits for a timer, and under load the queue that builds up during one model
call becomes the next (bigger) batch.

Nothing here can make a request wait without bound: a request waits at most REQUEST_TIMEOUT_S for
its rows (then DeadlineExceeded, and rows nobody else waits for leave the map), each stage bounds
every batch, a failed batch fails only its own rows, and a value read from Redis is used only if
it decodes to a finite float.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from prometheus_client import Counter

from housing_api.cache import MemoryTier, RedisTier, decode_value, encode_value
from housing_api.errors import DeadlineExceeded, Overloaded, ShuttingDown, StageFailed
from housing_api.inflight import InFlight, Pending, Source, Ticket
from housing_api.keys import Row, row_digest, rows_matrix
from housing_api.metrics import ServiceMetrics
from housing_api.model import Model
from housing_api.redis_faults import classify
from housing_api.stages import Stage

log = logging.getLogger(__name__)
__all__ = ["Resolver", "Source"]


def add(counter: Counter, n: int) -> None:
    """counter.inc(n), skipped for 0: every increment takes the counter's lock."""
    if n:
        counter.inc(n)


class Resolver:
    """Answers rows from the tiers or the model; the app's lifespan starts and stops it."""

    def __init__(
        self,
        model: Model,
        memory: MemoryTier[Row, float],
        redis: RedisTier | None,
        namespace: str,
        metrics: ServiceMetrics,
        *,
        batch_max_rows: int,
        batch_max_wait_s: float,
        max_queued_rows: int,
        inline_predict_rows: int,
        request_timeout_s: float = 5.0,
        micro_batching: bool = True,
    ) -> None:
        self.model = model
        self.memory = memory
        self.redis = redis
        self.namespace = namespace
        self.metrics = metrics
        self.batch_max_wait_s = batch_max_wait_s
        self.max_queued_rows = max_queued_rows
        self.inline_predict_rows = inline_predict_rows if model.fast_path else 0
        self.request_timeout_s = request_timeout_s
        self.micro_batching = micro_batching
        self.inflight = InFlight()
        self._closing = False
        # One inference thread: the model call releases the GIL, and the event loop stays free.
        self._executor = self._new_executor()
        # A batch is never worth waiting for longer than the requests that wait for it.
        bound = request_timeout_s
        self.lookup: Stage[Pending] = Stage(
            "lookup", self._lookup, self._lookup_failed, metrics, batch_max=batch_max_rows, bound_s=bound
        )
        self.predictor: Stage[Pending] = Stage(
            "model", self._predict, self._predict_failed, metrics, batch_max=batch_max_rows, bound_s=bound
        )
        # A cache write is best effort: past the bound, new writes are dropped (and counted).
        self.writer: Stage[tuple[str, bytes]] = Stage(
            "write", self._write, self._write_failed, metrics, batch_max=batch_max_rows,
            bound_s=max(bound, redis.write_timeout_s if redis else 0.0), capacity=max_queued_rows,
        )  # fmt: skip
        self.stages = (self.lookup, self.predictor, self.writer)
        self._mem_hit = metrics.cache_lookups.labels("memory", "hit")
        self._mem_miss = metrics.cache_lookups.labels("memory", "miss")
        self._redis_lookups = {o: metrics.cache_lookups.labels("redis", o) for o in ("hit", "miss", "error", "invalid")}
        self._served = {s: metrics.rows_served.labels(s) for s in ("memory", "redis", "model")}
        self._timeouts = metrics.timeouts.labels("request")
        metrics.memory_rows.set_function(memory.__len__)
        metrics.inflight_rows.set_function(self.inflight.__len__)
        metrics.watch_queues(
            {"redis": self.lookup.queue.__len__, "model": self.predictor.queue.__len__,
             "redis_write": self.writer.queue.__len__}
        )  # fmt: skip
        self._invalid_logged_at = float("-inf")

    @staticmethod
    def _new_executor() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        for stage in self.stages:
            stage.start()

    def stages_down(self) -> list[str]:
        return [stage.name for stage in self.stages if not stage.up]

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Refuse new work, let queued rows finish and flush Redis writes, all within timeout_s."""
        self._closing = True
        deadline = time.monotonic() + timeout_s
        for stage in self.stages:  # in data order: lookups feed the model, the model feeds writes
            await stage.stop(max(deadline - time.monotonic(), 0.1))
        # A hung model call keeps its thread; do not wait for it (the server's hard shutdown
        # deadline ends the process if that thread never returns).
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the request path --------------------------------------------------------------------
    async def predict(self, rows: list[Row]) -> tuple[list[float], list[Source]]:
        """Predictions and their sources, in row order, within request_timeout_s."""
        n = len(rows)
        values = [0.0] * n
        sources: list[Source] = ["memory"] * n
        missing = self._from_memory(rows, values)
        if missing:
            try:
                async with asyncio.timeout(self.request_timeout_s):
                    if self.micro_batching:
                        await self._resolve_shared(rows, missing, values, sources)
                    else:
                        await self._resolve_alone(rows, missing, values, sources)
            except TimeoutError:
                self._timeouts.inc()
                raise DeadlineExceeded(self.request_timeout_s) from None
        add(self._served["memory"], n - len(missing))
        return values, sources

    def _from_memory(self, rows: list[Row], values: list[float]) -> list[int]:
        missing: list[int] = []
        get = self.memory.get
        for i, row in enumerate(rows):
            value = get(row)
            if value is None:
                missing.append(i)
            else:
                values[i] = value
        add(self._mem_hit, len(rows) - len(missing))
        add(self._mem_miss, len(missing))
        return missing

    async def _resolve_shared(
        self, rows: list[Row], missing: list[int], values: list[float], sources: list[Source]
    ) -> None:
        if self._closing:
            raise ShuttingDown("the service is shutting down")
        if len(self.inflight) + len(missing) > self.max_queued_rows:
            self.metrics.rejected.labels("queue_full").inc()
            raise Overloaded(f"more than {self.max_queued_rows} rows are waiting for the model")
        ticket = Ticket(values, sources, len(missing))
        new = self.inflight.join(rows, missing, ticket)
        use_redis = self.redis is not None and self.redis.usable()
        (self.lookup if use_redis else self.predictor).put(new)
        try:
            await ticket.future
        except BaseException:
            # Deadline, disconnect or a failed batch: stop waiting, and rows that no other
            # request waits for leave the map (a stage holding them skips or finishes them).
            self.inflight.leave(ticket)
            raise

    async def _resolve_alone(
        self, rows: list[Row], missing: list[int], values: list[float], sources: list[Source]
    ) -> None:
        """The ablation baseline (MICRO_BATCHING=false): one MGET, one model call and one write
        per request, no sharing between requests. Kept to measure what batching buys."""
        todo = missing
        keys = {i: self.namespace + row_digest(rows[i]) for i in missing} if self.redis else {}
        if self.redis is not None:
            found = await self.redis.get_many([keys[i] for i in missing])
            if found is not None:
                decoded = [(i, decode_value(raw)) for i, raw in zip(missing, found, strict=True) if raw is not None]
                for i, value in decoded:
                    if value is not None:
                        values[i], sources[i] = value, "redis"
                todo = [i for i in missing if sources[i] != "redis"]
        if todo:
            X = rows_matrix(rows[i] for i in todo)
            predictions = (await self._call_model(X)).tolist()
            for i, value in zip(todo, predictions, strict=True):
                values[i], sources[i] = value, "model"
                self.memory.put(rows[i], value)
            if self.redis is not None:
                await self.redis.set_many([(keys[i], encode_value(values[i])) for i in todo])
        for source in ("redis", "model"):
            self._served[source].inc(sum(1 for i in missing if sources[i] == source))

    def _complete(self, answered: list[tuple[Pending, float]], source: Source) -> None:
        put, complete = self.memory.put, self.inflight.complete
        waiters = 0
        for pending, value in answered:
            put(pending.row, value)
            waiters += complete(pending, value, source)
        add(self._served[source], waiters)  # once per batch

    # -- stage: lookup ------------------------------------------------------------------------
    async def _lookup(self, batch: list[Pending]) -> None:
        assert self.redis is not None
        batch = [p for p in batch if not self.inflight.abandoned(p)]
        keys = [self.namespace + row_digest(p.row) for p in batch]
        for pending, key in zip(batch, keys, strict=True):
            pending.key = key
        found = await self.redis.get_many(keys) if batch else []
        if found is None:
            self._redis_lookups["error"].inc(len(batch))
            self.predictor.put(batch)
            return
        hits: list[tuple[Pending, float]] = []
        misses: list[Pending] = []
        invalid = 0
        for pending, raw in zip(batch, found, strict=True):
            value = None if raw is None else decode_value(raw)
            if value is not None:
                hits.append((pending, value))
                continue
            invalid += raw is not None
            misses.append(pending)
        self._complete(hits, "redis")
        self._count_lookups(len(hits), len(misses) - invalid, invalid)
        self.predictor.put(misses)

    def _count_lookups(self, hits: int, misses: int, invalid: int) -> None:
        add(self._redis_lookups["hit"], hits)
        add(self._redis_lookups["miss"], misses)
        if invalid:
            self._redis_lookups["invalid"].inc(invalid)
            now = time.monotonic()
            if now - self._invalid_logged_at > 10.0:  # once per burst, not once per row
                self._invalid_logged_at = now
                log.warning(
                    "ignored %d Redis values under %s* that are not predictions this release wrote; "
                    "recomputing and overwriting them", invalid, self.namespace,
                )  # fmt: skip

    def _lookup_failed(self, batch: list[Pending], exc: BaseException) -> None:
        # A cache failure is a miss: the rows go on to the model.
        if isinstance(exc, Exception):
            self.predictor.put([p for p in batch if not self.inflight.abandoned(p)])
        else:
            self.inflight.fail(batch, StageFailed("lookup"))

    # -- stage: model -------------------------------------------------------------------------
    async def _predict(self, batch: list[Pending]) -> None:
        if self.batch_max_wait_s and len(batch) < self.predictor.batch_max:
            await asyncio.sleep(self.batch_max_wait_s)
            extra = self.predictor.batch_max - len(batch)
            batch += [self.predictor.queue.popleft() for _ in range(min(extra, len(self.predictor.queue)))]
        batch = [p for p in batch if not self.inflight.abandoned(p)]
        if not batch:
            return
        X = rows_matrix(p.row for p in batch)
        started = time.perf_counter()
        if len(batch) <= self.inline_predict_rows:
            # Tiny batches on the compiled path take microseconds: a thread hop costs more.
            predictions = self.model.predict(X)
        else:
            predictions = await self._call_model(X)
        if not np.all(np.isfinite(predictions)):
            raise ValueError(f"the model returned a non-finite prediction for a batch of {len(batch)}")
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        self.metrics.rows_per_call.observe(len(batch))
        answered = list(zip(batch, predictions.tolist(), strict=True))
        self._complete(answered, "model")
        if self.redis is None:
            return
        ns = self.namespace
        writes = [(p.key or ns + row_digest(p.row), encode_value(value)) for p, value in answered]
        if dropped := self.writer.put(writes):
            self.metrics.write_dropped.inc(dropped)

    async def _call_model(self, X: np.ndarray) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.model.predict, X)

    def _predict_failed(self, batch: list[Pending], exc: BaseException) -> None:
        if isinstance(exc, TimeoutError):
            # The call is still running in the inference thread and would hold it: give the next
            # batches a fresh thread; the old one ends when (if) the call returns.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
        self.inflight.fail(batch, StageFailed("model"))

    # -- stage: write-behind ------------------------------------------------------------------
    async def _write(self, batch: list[tuple[str, bytes]]) -> None:
        if self.redis is not None:
            await self.redis.set_many(batch)

    def _write_failed(self, batch: list[tuple[str, bytes]], exc: BaseException) -> None:
        # Best effort: the rows are answered already. (set_many counts its own failures; this is the
        # stage's bound or an exception around it.)
        self.metrics.redis_errors.labels("set", classify(exc)).inc()
