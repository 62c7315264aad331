"""redis_channel.py with a stand-in connection: one connection kept while it is in step with the server,
dropped after any failure, and the client used while the channel is busy. (Against a real Redis:
tests/integration/test_redis_channel_live.py.)"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from redis.exceptions import ResponseError

from housing_api.redis_channel import Channel


class Connection:
    """A redis-py connection's calls the channel makes; `replies` are answered in order (an exception is raised)."""

    made: ClassVar[list[Connection]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.sent: list[tuple[Any, ...]] = []
        self.closed = False
        Connection.made.append(self)

    async def connect(self) -> None:
        pass

    def pack_command(self, *args: Any) -> tuple[Any, ...]:
        return args

    async def send_packed_command(self, packed: tuple[Any, ...], check_health: bool) -> None:
        assert check_health is False
        self.sent.append(packed)

    async def read_response(self) -> Any:
        reply = Client.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def disconnect(self, nowait: bool = False) -> None:
        self.closed = True


class Pool:
    connection_class = Connection
    connection_kwargs: ClassVar[dict[str, Any]] = {"host": "redis", "port": 6379, "db": 2, "socket_timeout": 0.05}


class Client:
    replies: ClassVar[list[Any]] = []

    def __init__(self) -> None:
        self.connection_pool = Pool()
        self.through_client: list[tuple[Any, ...]] = []

    async def execute_command(self, *args: Any) -> Any:
        self.through_client.append(args)
        return b"from the client"


@pytest.fixture(autouse=True)
def fresh() -> None:
    Connection.made.clear()
    Client.replies = []


def test_one_connection_made_like_the_pools_without_a_socket_timeout_and_kept() -> None:
    Client.replies = [b"PONG", b"OK"]
    channel = Channel(Client())  # type: ignore[arg-type]

    async def scenario() -> list[Any]:
        return [await channel.execute("PING"), await channel.execute("SET", "k", "v")]

    assert asyncio.run(scenario()) == [b"PONG", b"OK"]
    (conn,) = Connection.made
    assert conn.kwargs == {"host": "redis", "port": 6379, "db": 2, "socket_timeout": None}
    assert conn.sent == [("PING",), ("SET", "k", "v")]


def test_an_error_reply_keeps_the_connection_any_other_failure_drops_it() -> None:
    Client.replies = [ResponseError("NOSCRIPT"), TimeoutError(), b"OK"]
    channel = Channel(Client())  # type: ignore[arg-type]

    async def scenario() -> None:
        with pytest.raises(ResponseError):
            await channel.execute("EVALSHA", "x", 0)
        with pytest.raises(TimeoutError):
            await channel.execute("GET", "k")
        assert await channel.execute("GET", "k") == b"OK"

    asyncio.run(scenario())
    first, second = Connection.made
    assert first.sent == [("EVALSHA", "x", 0), ("GET", "k")] and first.closed
    assert second.sent == [("GET", "k")] and not second.closed


def test_a_call_while_the_channel_is_busy_goes_through_the_client() -> None:
    client = Client()
    channel = Channel(client)  # type: ignore[arg-type]
    release = asyncio.Event()

    async def slow_reply(self: Connection) -> Any:
        await release.wait()
        return b"from the channel"

    async def scenario() -> list[Any]:
        first = asyncio.create_task(channel.execute("GET", "a"))
        await asyncio.sleep(0)
        # Bounded so that a channel that queued it behind the first call fails here instead of hanging.
        second = await asyncio.wait_for(channel.execute("GET", "b"), 10)
        release.set()
        return [await first, second]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Connection, "read_response", slow_reply)
        assert asyncio.run(scenario()) == [b"from the channel", b"from the client"]
    assert client.through_client == [("GET", "b")]


def test_close_disconnects_the_kept_connection() -> None:
    Client.replies = [b"PONG"]
    channel = Channel(Client())  # type: ignore[arg-type]
    asyncio.run(channel.execute("PING"))
    asyncio.run(channel.close())
    assert Connection.made[0].closed
