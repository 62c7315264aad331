"""The single-flight map frees what it no longer needs by reference counting alone.

A ticket points to its rows' Pendings and each Pending back to its waiting tickets: unless that
cycle is broken once a ticket is answered, every request's bookkeeping outlives it until the cyclic
garbage collector runs, and under load those collections took most of the collector's time
(docs/benchmarks.md). These tests run with the collector off and count what is left.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from housing_api.inflight import InFlight, Pending, Source, Ticket

ROWS = [bytes([i]) * 64 for i in range(6)]


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def alive() -> dict[str, int]:
    objects = gc.get_objects()
    return {"Ticket": sum(type(o) is Ticket for o in objects), "Pending": sum(type(o) is Pending for o in objects)}


def request(flight: InFlight, positions: list[int]) -> tuple[Ticket, list[Pending]]:
    sources: list[Source] = ["memory"] * len(ROWS)
    ticket = Ticket([0.0] * len(ROWS), sources, len(positions))
    return ticket, flight.join(ROWS, positions, ticket)


def test_answered_requests_leave_nothing_behind(collector_off: None) -> None:
    async def go() -> tuple[list[float], list[float]]:
        flight = InFlight()
        first, new_first = request(flight, [0, 1, 2, 3])
        second, new_second = request(flight, [2, 3, 4, 5])  # shares rows 2 and 3 with the first
        assert len(new_first) == 4 and len(new_second) == 2
        for pending in new_first + new_second:
            flight.complete(pending, float(pending.row[0]), "model")
        del new_first, new_second, pending
        await asyncio.gather(first.future, second.future)
        assert len(flight) == 0
        return first.values, second.values

    first, second = asyncio.run(go())
    assert first[:4] == [0.0, 1.0, 2.0, 3.0] and second[2:] == [2.0, 3.0, 4.0, 5.0]
    assert alive() == {"Ticket": 0, "Pending": 0}


def test_requests_that_gave_up_leave_nothing_behind(collector_off: None) -> None:
    async def go() -> None:
        flight = InFlight()
        ticket, new = request(flight, [0, 1])
        flight.complete(new[0], 1.0, "redis")
        del new
        flight.leave(ticket)  # its deadline passed before row 1 was answered
        assert len(flight) == 0

    asyncio.run(go())
    assert alive() == {"Ticket": 0, "Pending": 0}
