"""A supervised background stage: one loop, one queue, every batch bounded in time.

Each stage of the resolver (the Redis and model tiers, the write-behind) is a `Stage`. What goes wrong in
one batch stays in that batch: an exception, or a batch that overruns its bound, is handed to the
stage's `on_error` (which decides what the rows' requests get), counted in
housing_api_worker_errors_total{stage} and logged with its traceback (at most once per
LOG_EVERY_S per stage, so a fault on every batch cannot flood the log), and the loop carries on.
A loop that dies anyway (an exception type nothing expected) is restarted after RESTART_DELAY_S;
until then housing_api_stage_up{stage} is 0 and /readyz says the pod is not ready. `down_for()` says
how long it has been down: past STAGE_DOWN_LIVEZ_S, /livez fails too and the kubelet restarts the pod,
since a supervisor that could not bring its stage back will not do better later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from housing_api.metrics import ServiceMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")
LOG_EVERY_S = 10.0
RESTART_DELAY_S = 0.05


class Stage(Generic[T]):
    """A loop that takes up to `batch_max` items from its queue and awaits `handle` on them
    (after waiting `linger_s` for more, when the batch is not full)."""

    def __init__(
        self,
        name: str,
        handle: Callable[[list[T]], Awaitable[None]],
        on_error: Callable[[list[T], BaseException], None],
        metrics: ServiceMetrics,
        *,
        batch_max: int,
        bound_s: float,
        capacity: int | None = None,
        linger_s: float = 0.0,
    ) -> None:
        self.name = name
        self.handle = handle
        self.on_error = on_error
        self.batch_max = batch_max
        self.bound_s = bound_s
        self.queue: deque[T] = deque()
        self.capacity = capacity
        self.linger_s = linger_s
        self.ready = asyncio.Event()
        self.closing = False
        self.busy = False
        self._task: asyncio.Task[None] | None = None
        self._down_since: float | None = None  # monotonic; None while up (or before the first start)
        self._errors = metrics.worker_errors.labels(name)
        self._up = metrics.stage_up.labels(name)
        self._logged_at = -LOG_EVERY_S
        self._quiet = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"stage-{self.name}")
        self._task.add_done_callback(self._ended)
        self._down_since = None
        self._up.set(1)

    @property
    def up(self) -> bool:
        return self._task is not None and not self._task.done()

    def down_for(self) -> float:
        """Seconds since the loop died and was not brought back (0 while up, closing, or not started)."""
        return 0.0 if self._down_since is None or self.up else time.monotonic() - self._down_since

    async def stop(self, timeout_s: float) -> None:
        """Finish what is queued (bounded), then end the loop; cancel it only as the fallback."""
        self.closing = True
        self.ready.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
        if not done:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=1.0)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self.closing:
            self._up.set(0)
            return
        exc = None if task.cancelled() else task.exception()
        self._up.set(0)
        self._down_since = time.monotonic()
        log.error("stage %s stopped (%r); restarting it", self.name, exc, exc_info=exc)
        asyncio.get_running_loop().call_later(RESTART_DELAY_S, self._restart)

    def _restart(self) -> None:
        if not self.closing:
            self.start()

    # -- work ----------------------------------------------------------------------------------
    def put(self, items: list[T]) -> int:
        """Queue items and wake the loop; returns how many were dropped (queue at capacity)."""
        room = len(items) if self.capacity is None else max(self.capacity - len(self.queue), 0)
        self.queue.extend(items if room >= len(items) else items[:room])
        if items:
            self.ready.set()
        return max(len(items) - room, 0)

    async def _loop(self) -> None:
        while True:
            if not self.queue:
                if self.closing:
                    return
                await self.ready.wait()
                self.ready.clear()
                continue
            await self._run(self._take(self.batch_max))

    def _take(self, n: int) -> list[T]:
        """Up to n items from the head of the queue."""
        queue = self.queue
        if len(queue) <= n:
            batch = list(queue)
            queue.clear()
            return batch
        return [queue.popleft() for _ in range(n)]

    async def _run(self, batch: list[T]) -> None:
        self.busy = True
        try:
            async with asyncio.timeout(self.bound_s):
                if self.linger_s and len(batch) < self.batch_max:
                    await self._linger(batch)
                await self.handle(batch)
        except Exception as exc:  # contained: costs this batch only
            self._contain(batch, exc)
        except BaseException as exc:
            # Cancellation, or an exception type nothing expected: the batch's requests are
            # answered all the same, then the loop ends (and is restarted unless closing).
            self._contain(batch, exc)
            raise
        finally:
            self.busy = False

    async def _linger(self, batch: list[T]) -> None:
        """BATCH_MAX_WAIT_MS: a batch that is not full waits this long once for more items."""
        await asyncio.sleep(self.linger_s)
        batch += self._take(self.batch_max - len(batch))

    def _contain(self, batch: list[T], exc: BaseException) -> None:
        self._errors.inc()
        try:
            self.on_error(batch, exc)
        finally:
            self._log(len(batch), exc)

    def _log(self, size: int, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY_S:
            self._quiet += 1
            return
        quiet, self._quiet, self._logged_at = self._quiet, 0, now
        also = f" ({quiet} more since the last report)" if quiet else ""
        what = f"overran its {self.bound_s:g} s bound" if isinstance(exc, TimeoutError) else "failed"
        log.error("stage %s %s on a batch of %d%s", self.name, what, size, also, exc_info=exc)
