"""The row resolver: in-process tier, then Redis, then the model, batched across requests.

Every row a request could not answer from the in-process tier becomes a pending row. Pending rows
from all concurrent requests are looked up in Redis with one MGET per micro-batch, the remaining
misses are predicted in one vectorised model call, and the results are written back to Redis with
one pipelined round trip. Batching is adaptive: a worker takes whatever is queued the moment it is
free, so a lone request never waits for a timer, and under load the queue that builds up during
one model call becomes the next (bigger) batch. Identical rows in flight are computed once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np

from housing_api.cache import MemoryTier, RedisTier, decode_value, encode_value
from housing_api.errors import Overloaded, ShuttingDown
from housing_api.keys import Row, row_digest
from housing_api.metrics import ServiceMetrics
from housing_api.model import Model

log = logging.getLogger(__name__)
Source = Literal["memory", "redis", "model"]


class _Ticket:
    """One request's view of its missing rows: filled in place, done when nothing remains."""

    __slots__ = ("future", "remaining", "sources", "values")

    def __init__(self, values: list[float], sources: list[Source], remaining: int) -> None:
        self.values = values
        self.sources = sources
        self.remaining = remaining
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _Pending:
    """A row being resolved, and every (request, position) waiting for it (single-flight)."""

    __slots__ = ("key", "row", "waiters")

    def __init__(self, row: Row) -> None:
        self.row = row
        self.key: str | None = None
        self.waiters: list[tuple[_Ticket, int]] = []


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
        micro_batching: bool = True,
    ) -> None:
        self.model = model
        self.memory = memory
        self.redis = redis
        self.namespace = namespace
        self.metrics = metrics
        self.batch_max_rows = batch_max_rows
        self.batch_max_wait_s = batch_max_wait_s
        self.max_queued_rows = max_queued_rows
        self.inline_predict_rows = inline_predict_rows if model.fast_path else 0
        self.micro_batching = micro_batching
        self._inflight: dict[Row, _Pending] = {}
        self._lookup_q: deque[_Pending] = deque()
        self._model_q: deque[_Pending] = deque()
        # A cache write is best effort: under a long Redis stall the oldest writes are dropped.
        self._write_q: deque[tuple[str, bytes]] = deque(maxlen=max_queued_rows)
        self._lookup_ready = asyncio.Event()
        self._model_ready = asyncio.Event()
        self._write_ready = asyncio.Event()
        # One inference thread: the model call releases the GIL, and the event loop stays free.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._mem_hit = metrics.cache_lookups.labels("memory", "hit")
        self._mem_miss = metrics.cache_lookups.labels("memory", "miss")
        self._redis_lookups = {o: metrics.cache_lookups.labels("redis", o) for o in ("hit", "miss", "error")}
        self._served = {s: metrics.rows_served.labels(s) for s in ("memory", "redis", "model")}
        metrics.memory_rows.set_function(memory.__len__)
        metrics.watch_queues(
            {"redis": self._lookup_q.__len__, "model": self._model_q.__len__, "redis_write": self._write_q.__len__}
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        for worker in (self._lookup_worker, self._model_worker, self._write_worker):
            self._tasks.append(asyncio.create_task(worker(), name=worker.__name__))

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Refuse new work, let queued rows finish, flush pending Redis writes, then stop."""
        self._closing = True
        deadline = time.monotonic() + timeout_s
        while (self._inflight or self._write_q) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # Wake the workers so they see _closing and return; cancelling them is the fallback only,
        # because redis-py can swallow a cancellation that lands inside a pipeline.
        for event in (self._lookup_ready, self._model_ready, self._write_ready):
            event.set()
        _, pending = await asyncio.wait(self._tasks, timeout=2.0)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        self._executor.shutdown(wait=True)

    # -- the request path --------------------------------------------------------------------
    async def predict(self, rows: list[Row]) -> tuple[list[float], list[Source]]:
        """Predictions and their sources, in row order."""
        n = len(rows)
        values = [0.0] * n
        sources: list[Source] = ["memory"] * n
        missing = self._from_memory(rows, values)
        if missing and not self.micro_batching:
            await self._resolve_alone(rows, missing, values, sources)
        elif missing:
            ticket = _Ticket(values, sources, len(missing))
            self._enqueue(rows, missing, ticket)
            await ticket.future
        self._served["memory"].inc(n - len(missing))
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
        self._mem_hit.inc(len(rows) - len(missing))
        self._mem_miss.inc(len(missing))
        return missing

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
                todo = [i for i, raw in zip(missing, found, strict=True) if raw is None]
                for i, raw in zip(missing, found, strict=True):
                    if raw is not None:
                        values[i], sources[i] = decode_value(raw), "redis"
        if todo:
            X = np.array([rows[i] for i in todo], dtype=np.float64)
            loop = asyncio.get_running_loop()
            predictions = (await loop.run_in_executor(self._executor, self.model.predict, X)).tolist()
            self.metrics.rows_per_call.observe(len(todo))
            for i, value in zip(todo, predictions, strict=True):
                values[i], sources[i] = value, "model"
                self.memory.put(rows[i], value)
            if self.redis is not None:
                await self.redis.set_many([(keys[i], encode_value(values[i])) for i in todo])
        for source in ("redis", "model"):
            self._served[source].inc(sum(1 for i in missing if sources[i] == source))

    def _enqueue(self, rows: list[Row], missing: list[int], ticket: _Ticket) -> None:
        if self._closing:
            raise ShuttingDown("the service is shutting down")
        if len(self._inflight) + len(missing) > self.max_queued_rows:
            self.metrics.rejected.labels("queue_full").inc()
            raise Overloaded(f"more than {self.max_queued_rows} rows are waiting for the model")
        use_redis = self.redis is not None and self.redis.usable()
        for i in missing:
            pending = self._inflight.get(rows[i])
            if pending is None:
                pending = self._inflight[rows[i]] = _Pending(rows[i])
                (self._lookup_q if use_redis else self._model_q).append(pending)
            pending.waiters.append((ticket, i))
        (self._lookup_ready if use_redis else self._model_ready).set()

    def _complete(self, pending: _Pending, value: float, source: Source) -> None:
        del self._inflight[pending.row]
        self.memory.put(pending.row, value)
        self._served[source].inc(len(pending.waiters))
        for ticket, i in pending.waiters:
            ticket.values[i] = value
            ticket.sources[i] = source
            ticket.remaining -= 1
            if ticket.remaining == 0 and not ticket.future.done():
                ticket.future.set_result(None)

    def _fail(self, batch: list[_Pending], exc: BaseException) -> None:
        for pending in batch:
            self._inflight.pop(pending.row, None)
            for ticket, _ in pending.waiters:
                if not ticket.future.done():
                    ticket.future.set_exception(exc)

    # -- workers -------------------------------------------------------------------------------
    def _take(self, queue: deque[_Pending]) -> list[_Pending]:
        return [queue.popleft() for _ in range(min(len(queue), self.batch_max_rows))]

    async def _woken(self, ready: asyncio.Event, queue: deque[Any]) -> bool:
        """Wait for work; False once the resolver is closing and this worker's queue is empty."""
        if not queue:
            await ready.wait()
        ready.clear()
        return bool(queue) or not self._closing

    async def _lookup_worker(self) -> None:
        assert self.redis is not None or not self._lookup_q
        while await self._woken(self._lookup_ready, self._lookup_q):
            while self._lookup_q:
                await self._lookup(self._take(self._lookup_q))

    async def _lookup(self, batch: list[_Pending]) -> None:
        assert self.redis is not None
        keys = [self.namespace + row_digest(p.row) for p in batch]
        for pending, key in zip(batch, keys, strict=True):
            pending.key = key
        found = await self.redis.get_many(keys)
        if found is None:
            self._redis_lookups["error"].inc(len(batch))
            self._model_q.extend(batch)
        else:
            hits = 0
            for pending, raw in zip(batch, found, strict=True):
                if raw is None:
                    self._model_q.append(pending)
                else:
                    hits += 1
                    self._complete(pending, decode_value(raw), "redis")
            self._redis_lookups["hit"].inc(hits)
            self._redis_lookups["miss"].inc(len(batch) - hits)
        if self._model_q:
            self._model_ready.set()

    async def _model_worker(self) -> None:
        while await self._woken(self._model_ready, self._model_q):
            while self._model_q:
                if self.batch_max_wait_s and len(self._model_q) < self.batch_max_rows:
                    await asyncio.sleep(self.batch_max_wait_s)
                await self._run_model(self._take(self._model_q))

    async def _run_model(self, batch: list[_Pending]) -> None:
        X = np.array([p.row for p in batch], dtype=np.float64)
        started = time.perf_counter()
        try:
            if len(batch) <= self.inline_predict_rows:
                # Tiny batches on the compiled path take microseconds: a thread hop costs more.
                predictions = self.model.predict(X)
            else:
                loop = asyncio.get_running_loop()
                predictions = await loop.run_in_executor(self._executor, self.model.predict, X)
        except Exception as exc:
            log.exception("model call failed for %d rows", len(batch))
            self._fail(batch, exc)
            return
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        self.metrics.rows_per_call.observe(len(batch))
        self._store(batch, predictions.tolist())

    def _store(self, batch: list[_Pending], predictions: list[float]) -> None:
        # The bounded write queue pushes its oldest rows out when full: count what it drops.
        room = (self._write_q.maxlen or 0) - len(self._write_q)
        if self.redis is not None and len(batch) > room:
            self.metrics.redis_write_dropped.inc(len(batch) - room)
        for pending, value in zip(batch, predictions, strict=True):
            self._complete(pending, value, "model")
            if self.redis is not None:
                key = pending.key or self.namespace + row_digest(pending.row)
                self._write_q.append((key, encode_value(value)))
        if self._write_q:
            self._write_ready.set()

    async def _write_worker(self) -> None:
        while await self._woken(self._write_ready, self._write_q):
            while self._write_q and self.redis is not None:
                n = min(len(self._write_q), self.batch_max_rows)
                await self.redis.set_many([self._write_q.popleft() for _ in range(n)])
