"""The row resolver: runs every request's rows down the resolution chain, batched across requests.

The chain (memory -> Redis -> model, writes behind to Redis) is declared once, in app.py, as a
`Chain` of tiers that all have one shape (tiers.py). A row the in-process tier cannot answer joins
the single-flight map (inflight.py) and travels the other tiers, each run by a supervised stage
(stages.py) of the tier's name: `redis` (one MGET per micro-batch) and `model` (one vectorised
call per micro-batch); what the model computes goes on to `redis_write` (one EVALSHA per
micro-batch). Batching is adaptive: a stage takes whatever is queued the moment it is free, so a
lone request never waits for a timer, and under load the queue that builds up during one model
call becomes the next (bigger) batch. With MICRO_BATCHING=false the same tiers run inline, on one
request's rows at a time.

Nothing here can make a request wait without bound: a request waits at most REQUEST_TIMEOUT_S for
its rows (then DeadlineExceeded, and rows nobody else waits for leave the map), each stage bounds
every batch, a failed batch fails only its own rows, and a value read from Redis is used only if
it decodes to a finite float.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from housing_api.cache import MemoryTier, RedisTier
from housing_api.config import STAGE_DOWN_LIVEZ_S_DEFAULT
from housing_api.drift import QUEUE_ROWS as DRIFT_QUEUE_ROWS
from housing_api.drift import DriftCheck, Sampled
from housing_api.errors import DeadlineExceeded, Overloaded, ShuttingDown, StageFailed, StageStuck
from housing_api.inflight import InFlight, Pending, Ticket, unshared
from housing_api.keys import Row
from housing_api.metrics import HIT, MEMORY, MISS, QUEUE_FULL, REDIS, REQUEST, ServiceMetrics, Source
from housing_api.stages import Stage
from housing_api.tiers import RedisWrites, Tier, add

if TYPE_CHECKING:  # imported only when tracing is on (app.py)
    from housing_api.tracing import Tracing

__all__ = ["Chain", "Resolver", "Source"]


@dataclass(frozen=True)
class Chain:
    """The order a row travels, declared once (app.py)."""

    memory: MemoryTier[Row, float]
    """The head, read on the request path itself; every answer a later tier gives is stored here."""
    tiers: tuple[Tier, ...]
    """Then each tier in turn, a batch at a time; the last answers every row it gets (the model)."""
    write_behind: RedisWrites
    """What the last tier computed is stored here, off the request path."""
    drift: DriftCheck | None = None
    """A sample of what the last tier computed is compared with the stable version's answers (drift.py)."""


class Resolver:
    """Answers rows down the chain; the app's lifespan starts and stops it."""

    def __init__(
        self,
        chain: Chain,
        metrics: ServiceMetrics,
        *,
        batch_max_rows: int,
        batch_max_wait_s: float,
        max_queued_rows: int,
        request_timeout_s: float,
        micro_batching: bool = True,
        stage_down_livez_s: float = STAGE_DOWN_LIVEZ_S_DEFAULT,
        tracing: Tracing | None = None,
    ) -> None:
        self.memory = chain.memory
        self.tiers = chain.tiers
        self.write_behind = chain.write_behind
        self.metrics = metrics
        self.max_queued_rows = max_queued_rows
        self.request_timeout_s = request_timeout_s
        self.micro_batching = micro_batching
        self.stage_down_livez_s = stage_down_livez_s
        self.tracing = tracing
        self.inflight = InFlight()
        self._closing = False
        # A batch is never worth waiting for longer than the requests that wait for it (config.py).
        bound = request_timeout_s
        last = len(self.tiers) - 1
        self.tier_stages: tuple[Stage[Pending], ...] = tuple(
            Stage(tier.name, partial(self._run, i), partial(self._failed, i), metrics, batch_max=batch_max_rows,
                  bound_s=bound, linger_s=batch_max_wait_s if i == last else 0.0)
            for i, tier in enumerate(self.tiers)
        )  # fmt: skip
        # A cache write is best effort: past the bound, new writes are dropped (and counted).
        writes = self.write_behind
        self.writer: Stage[tuple[str, bytes]] = Stage(
            writes.name, writes.write, writes.failed, metrics, batch_max=batch_max_rows,
            bound_s=max(bound, writes.timeout_s), capacity=max_queued_rows,
        )  # fmt: skip
        # The drift comparison, only where it is on: its check, and the stage that runs it.
        self.drift: tuple[DriftCheck, Stage[Sampled]] | None = None
        if (check := chain.drift) is not None:
            self.drift = check, Stage(check.name, check.compare, check.failed, metrics, batch_max=batch_max_rows,
                                      bound_s=bound, capacity=DRIFT_QUEUE_ROWS)  # fmt: skip
        self.stages: tuple[Stage[Pending] | Stage[tuple[str, bytes]] | Stage[Sampled], ...] = (
            *self.tier_stages, self.writer, *(self.drift[1:] if self.drift else ()),
        )  # fmt: skip
        self._mem_hit = metrics.cache_lookups.labels(MEMORY, HIT)
        self._mem_miss = metrics.cache_lookups.labels(MEMORY, MISS)
        self._served = {s: metrics.rows_served.labels(s) for s in (MEMORY, *(t.name for t in self.tiers))}
        self._timeouts = metrics.timeouts.labels(REQUEST)
        metrics.memory_rows.set_function(self.memory.__len__)
        metrics.inflight_rows.set_function(self.inflight.__len__)
        metrics.watch_queues({stage.name: stage.queue.__len__ for stage in self.stages})

    # The shared tier's client and two stages, by the names /readyz and the tests know them.
    @property
    def redis(self) -> RedisTier | None:
        return self.write_behind.redis

    @property
    def lookup(self) -> Stage[Pending]:
        return self._stage(REDIS)

    @property
    def predictor(self) -> Stage[Pending]:
        return self.tier_stages[-1]

    @property
    def drift_stage(self) -> Stage[Sampled] | None:
        return None if self.drift is None else self.drift[1]

    def _stage(self, name: str) -> Stage[Pending]:
        return next(stage for stage in self.tier_stages if stage.name == name)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        for stage in self.stages:
            stage.start()

    def stages_down(self) -> list[str]:
        return [stage.name for stage in self.stages if not stage.up]

    def check_live(self) -> None:
        """Raise StageStuck (a NotReady: 503) when a stage has been down for more than
        STAGE_DOWN_LIVEZ_S despite its supervisor's restarts."""
        if stuck := [stage.name for stage in self.stages if stage.down_for() > self.stage_down_livez_s]:
            raise StageStuck(f"stage {', '.join(stuck)} down for over {self.stage_down_livez_s:g} s")

    async def stop(self, timeout_s: float) -> None:
        """Refuse new work, let queued rows finish and flush Redis writes, all within timeout_s."""
        self._closing = True
        deadline = time.monotonic() + timeout_s
        for stage in self.stages:  # in data order: each tier feeds the next, the model feeds writes
            await stage.stop(max(deadline - time.monotonic(), 0.1))
        for tier in self.tiers:
            tier.close()

    # -- the request path --------------------------------------------------------------------
    async def predict(self, rows: list[Row]) -> tuple[list[float], list[Source]]:
        """Predictions and their sources, in row order, within request_timeout_s."""
        n = len(rows)
        values = [0.0] * n
        sources: list[Source] = [MEMORY] * n
        if self.tracing is None:
            missing = self._from_memory(rows, values)
        else:
            missing = self.tracing.memory_lookup(self._from_memory, rows, values)
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
        add(self._served[MEMORY], n - len(missing))
        return values, sources

    def _from_memory(self, rows: list[Row], values: list[float]) -> list[int]:
        """The chain's head: no await and no allocation per hit (most requests end here)."""
        missing = self.memory.get_many(rows, values)
        add(self._mem_hit, len(rows) - len(missing))
        add(self._mem_miss, len(missing))
        return missing

    async def _resolve_shared(
        self, rows: list[Row], missing: list[int], values: list[float], sources: list[Source]
    ) -> None:
        if self._closing:
            raise ShuttingDown("the service is shutting down")
        if len(self.inflight) + len(missing) > self.max_queued_rows:
            self.metrics.rejected.labels(QUEUE_FULL).inc()
            raise Overloaded(f"more than {self.max_queued_rows} rows are waiting for the model")
        ticket = Ticket(values, sources, len(missing))
        if self.tracing is not None:
            ticket.span = self.tracing.request_context()
        self._pass_on(0, self.inflight.join(rows, missing, ticket))
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
        """The ablation baseline (MICRO_BATCHING=false): the same tiers, run here on this request's
        rows alone: one MGET, one model call and one write, no sharing between requests. Kept to
        measure what batching buys."""
        ticket = Ticket(values, sources, len(missing))
        if self.tracing is not None:
            ticket.span = self.tracing.request_context()
        batch = unshared(rows, missing, ticket)
        for tier in self.tiers:
            if not batch:
                return
            if not tier.usable():
                continue
            try:
                found = await tier.answer(batch)
            except Exception as exc:
                if tier.failed(exc):
                    continue  # answered nothing: the whole batch goes on
                raise
            answered, batch = self._settle(tier, batch, found)
            if tier is self.tiers[-1] and self.write_behind.enabled():
                await self.write_behind.write(self.write_behind.items(answered))
            if tier is self.tiers[-1] and self.drift is not None:
                self._sample_drift(answered)

    # -- the stages --------------------------------------------------------------------------
    async def _run(self, i: int, batch: list[Pending]) -> None:
        """Stage of tier i: answer what it can, pass the rest on, write behind what the model computed."""
        batch = self.inflight.wanted(batch)
        if not batch:
            return
        tier = self.tiers[i]
        answered, rest = self._settle(tier, batch, await tier.answer(batch))
        self._pass_on(i + 1, rest)
        if tier is self.tiers[-1] and answered and self.write_behind.enabled():
            self._write_behind(answered)
        if self.drift is not None and tier is self.tiers[-1]:
            self._sample_drift(answered)

    def _write_behind(self, answered: list[tuple[Pending, float]]) -> None:
        if dropped := self.writer.put(self.write_behind.items(answered)):
            self.metrics.write_dropped.inc(dropped)

    def _sample_drift(self, answered: list[tuple[Pending, float]]) -> None:
        """Queue a sample of the rows the model computed for the drift stage (never waited for)."""
        assert self.drift is not None
        check, stage = self.drift
        if sampled := check.sampled(answered):
            check.dropped(stage.put(sampled))

    def _failed(self, i: int, batch: list[Pending], exc: BaseException) -> None:
        tier = self.tiers[i]
        if tier.failed(exc):
            self._pass_on(i + 1, self.inflight.wanted(batch))
        else:
            self.inflight.fail(batch, StageFailed(tier.name))

    def _pass_on(self, i: int, rows: list[Pending]) -> None:
        """Queue rows for the first usable tier from i on (a Redis backing off is skipped)."""
        if not rows:
            return
        for j in range(i, len(self.tiers)):
            if self.tiers[j].usable():
                self.tier_stages[j].put(rows)
                return
        self.inflight.fail(rows, StageFailed(self.tiers[-1].name))  # no tier left: not reached

    def _settle(
        self, tier: Tier, batch: list[Pending], found: Sequence[float | None]
    ) -> tuple[list[tuple[Pending, float]], list[Pending]]:
        """Answer every waiter of the rows the tier knew and keep them in memory; returns those
        rows with their values, and the rest."""
        pairs = list(zip(batch, found, strict=True))
        answered = [(p, v) for p, v in pairs if v is not None]
        rest = [p for p, v in pairs if v is None] if len(answered) < len(pairs) else []
        self.memory.put_many([(p.row, v) for p, v in answered])
        add(self._served[tier.name], self.inflight.complete_all(answered, tier.name))  # once per batch
        return answered, rest
