"""Single-flight: every row being resolved is resolved once, however many requests wait for it.

A `Ticket` is one request's view of its missing rows; a `Pending` is one row on its way through
the stages, with every (ticket, position) waiting for it. A row stays in the map only while some
stage holds it: completed, failed or abandoned by every waiter, it leaves at once, so a fault in
one batch can never leave a row behind for later requests to wait on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from housing_api.keys import Row
from housing_api.metrics import Source

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext


class Ticket:
    """One request's missing rows: filled in place, its future done when nothing remains."""

    __slots__ = ("future", "pendings", "remaining", "sources", "span", "values")

    def __init__(self, values: list[float], sources: list[Source], remaining: int) -> None:
        self.values = values
        self.sources = sources
        self.remaining = remaining
        self.pendings: list[Pending] = []
        self.span: SpanContext | None = None
        """The request's span when tracing is on and it is sampled: the batches its rows join link to it."""
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Pending:
    """A row being resolved, and every (ticket, position) waiting for it."""

    __slots__ = ("key", "row", "waiters")

    def __init__(self, row: Row) -> None:
        self.row = row
        self.key: str | None = None
        self.waiters: list[tuple[Ticket, int]] = []


class InFlight:
    """The map from row to its Pending."""

    def __init__(self) -> None:
        self._rows: dict[Row, Pending] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def join(self, rows: list[Row], positions: Iterable[int], ticket: Ticket) -> list[Pending]:
        """Wait for rows[i] for each position; returns the rows nobody was resolving yet."""
        new: list[Pending] = []
        for i in positions:
            pending = self._rows.get(rows[i])
            if pending is None:
                pending = self._rows[rows[i]] = Pending(rows[i])
                new.append(pending)
            pending.waiters.append((ticket, i))
            ticket.pendings.append(pending)
        return new

    def complete(self, pending: Pending, value: float, source: Source) -> int:
        """Answer every waiter of the row; returns how many there were."""
        return self.complete_all(((pending, value),), source)

    def complete_all(self, answered: Iterable[tuple[Pending, float]], source: Source) -> int:
        """Answer every waiter of each row with its value (a batch in one call: no call per row);
        returns how many waiters there were in all."""
        rows, n = self._rows, 0
        for pending, value in answered:
            if rows.get(pending.row) is pending:  # _forget, inline
                del rows[pending.row]
            for ticket, i in pending.waiters:
                ticket.values[i] = value
                ticket.sources[i] = source
                ticket.remaining -= 1
                if ticket.remaining == 0 and not ticket.future.done():
                    # Answered: the ticket needs its rows no more. Dropping them breaks the cycle
                    # ticket -> pendings -> waiters -> ticket, so both are freed at once by reference
                    # counting instead of piling up for the cyclic collector (3,000 objects per
                    # collection under load, most of its time; docs/benchmarks.md).
                    ticket.pendings = []
                    ticket.future.set_result(None)
            n += len(pending.waiters)
        return n

    def fail(self, pendings: Iterable[Pending], exc: BaseException) -> None:
        """Fail every request waiting for these rows (each request once)."""
        for pending in pendings:
            self._forget(pending)
            for ticket, _ in pending.waiters:
                if not ticket.future.done():
                    ticket.future.set_exception(exc)

    def leave(self, ticket: Ticket) -> None:
        """The request stopped waiting (deadline, disconnect): rows nobody else waits for leave the map."""
        for pending in ticket.pendings:
            pending.waiters = [(t, i) for t, i in pending.waiters if t is not ticket]
            if not pending.waiters:
                self._forget(pending)
        ticket.pendings = []

    def _forget(self, pending: Pending) -> None:
        # Only this Pending: a newer one for the same row may have replaced it after it was abandoned.
        if self._rows.get(pending.row) is pending:
            del self._rows[pending.row]

    def abandoned(self, pending: Pending) -> bool:
        """No request waits for the row any more (a stage may skip it)."""
        return not pending.waiters

    @staticmethod
    def wanted(pendings: list[Pending]) -> list[Pending]:
        """The rows some request still waits for (not abandoned), in order."""
        return [p for p in pendings if p.waiters]


def unshared(rows: list[Row], positions: Iterable[int], ticket: Ticket) -> list[Pending]:
    """One request's rows outside the map, each waited for by that request alone (MICRO_BATCHING=false)."""
    pendings: list[Pending] = []
    for i in positions:
        pending = Pending(rows[i])
        pending.waiters.append((ticket, i))
        pendings.append(pending)
    return pendings
