"""redis_channel.Channel against a real redis-server: an interrupted call never leaves a reply behind
for the next one, a dead connection is replaced, and a busy channel hands callers to the client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from conftest import RedisServer

from housing_api.redis_channel import Channel

pytestmark = pytest.mark.integration


def with_channel(url: str, body: Callable[[Channel, aioredis.Redis], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        client = aioredis.Redis.from_url(url)
        channel = Channel(client)
        try:
            return await body(channel, client)
        finally:
            await channel.close()
            await client.aclose()

    return asyncio.run(go())


def test_a_read_cut_off_by_a_timeout_never_answers_the_next_call(own_redis: RedisServer) -> None:
    admin = own_redis.client()
    admin.mset({"old": b"stale", "new": b"fresh"})

    async def body(channel: Channel, _: aioredis.Redis) -> list[Any]:
        assert await channel.execute("PING") == b"PONG"  # connected
        admin.execute_command("CLIENT", "PAUSE", "400", "ALL")  # Redis accepts the command, answers later
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await channel.execute("MGET", "old")
        await asyncio.sleep(0.5)  # the pause ends; the reply to MGET old is now sent to someone
        return [await channel.execute("MGET", "new") for _ in range(3)]

    assert with_channel(own_redis.url, body) == [[b"fresh"]] * 3


def test_a_restarted_redis_is_reconnected(own_redis: RedisServer) -> None:
    async def body(channel: Channel, _: aioredis.Redis) -> Any:
        await channel.execute("SET", "k", b"1")
        own_redis.stop()
        with pytest.raises(Exception):  # noqa: B017 - whichever error the dead socket gives
            async with asyncio.timeout(2):
                await channel.execute("GET", "k")
        own_redis.start()  # an empty Redis on the same port
        await channel.execute("SET", "k", b"2")
        return await channel.execute("GET", "k")

    assert with_channel(own_redis.url, body) == b"2"


def test_a_busy_channel_sends_the_caller_through_the_client(own_redis: RedisServer) -> None:
    own_redis.client().mset({f"k{i}": str(i).encode() for i in range(20)})

    async def body(channel: Channel, client: aioredis.Redis) -> list[Any]:
        await channel.execute("PING")  # the channel's own connection exists before the count
        clients_before = len(await client.client_list())
        replies = await asyncio.gather(*(channel.execute("GET", f"k{i}") for i in range(20)))
        assert len(await client.client_list()) > clients_before  # some went through the pool
        return replies

    assert with_channel(own_redis.url, body) == [str(i).encode() for i in range(20)]


def test_a_server_error_keeps_the_connection(own_redis: RedisServer) -> None:
    async def body(channel: Channel, client: aioredis.Redis) -> Any:
        await channel.execute("SET", "k", b"v")
        ids = {c["id"] for c in await client.client_list()}
        with pytest.raises(aioredis.ResponseError):
            await channel.execute("INCR", "k")  # not an integer: the server says so, in step
        assert await channel.execute("GET", "k") == b"v"
        return {c["id"] for c in await client.client_list()} - ids

    assert with_channel(own_redis.url, body) == set()  # no new connection but the client's own
