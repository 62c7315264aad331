"""redis_cluster.py's round trip with a stand-in connection: a pipeline is one write and a reply per
command, an error reply stays in its place, and a link drops a connection that failed. (Slot routing,
MOVED and failover against a real cluster: tests/integration/test_redis_cluster_live.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import MovedError, ResponseError

from housing_api.redis_cluster import NodeLink, exchange


class Connection:
    """The calls exchange() makes: replies are read in order; an exception in them is raised."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.writes: list[Any] = []
        self.closed = False

    def pack_commands(self, commands: Any) -> list[Any]:
        return list(commands)

    async def send_packed_command(self, packed: Any, check_health: bool) -> None:
        self.writes.append(packed)

    async def read_response(self) -> Any:
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def disconnect(self, nowait: bool = False) -> None:
        self.closed = True


def test_a_pipeline_is_one_write_and_one_reply_per_command_in_order() -> None:
    conn = Connection([[b"1", None], b"OK"])
    replies = asyncio.run(exchange(conn, [("MGET", "a", "b"), ("SET", "c", "1", "EX", 60)]))
    assert replies == [[b"1", None], b"OK"]
    assert conn.writes == [[("MGET", "a", "b"), ("SET", "c", "1", "EX", 60)]]


def test_an_error_reply_is_kept_in_its_place_and_the_rest_still_read() -> None:
    moved = MovedError("3999 127.0.0.1:7002")
    conn = Connection([moved, b"OK"])
    replies = asyncio.run(exchange(conn, [("MGET", "a"), ("SET", "b", "1")]))
    assert replies == [moved, b"OK"] and isinstance(replies[0], ResponseError)


def test_a_link_keeps_its_connection_until_a_call_fails_on_it() -> None:
    kept = Connection([[b"1"], [b"2"], ConnectionResetError()])
    link = NodeLink(node=None)  # type: ignore[arg-type]
    link._conn = kept

    async def scenario() -> None:
        assert await link.pipeline([("MGET", "a")]) == [[b"1"]]
        assert await link.pipeline([("MGET", "a")]) == [[b"2"]]
        with pytest.raises(ConnectionResetError):
            await link.pipeline([("MGET", "a")])

    asyncio.run(scenario())
    assert kept.closed and link._conn is None  # it may owe a reply: never reused
