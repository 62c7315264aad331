"""One Redis connection for one loop: a command at a time, outside redis-py's pool and client.

The lookup and write-behind stages send one command per micro-batch, and redis-py's client spends
more event-loop time around a command than on it: the pool's lock and its check that a connection
has no stray data (a read), a retry wrapper, and a task per write to bound it (asyncio.wait_for).
For one-row requests that was most of a command's cost (docs/benchmarks.md). A Channel keeps one
connection, made the way the client's pool makes them (same URL, TLS, credentials, database),
without a socket timeout: every caller already bounds the whole call with asyncio.timeout.

A connection that failed or was interrupted (a timeout cancels the read) may still owe a reply, so
it is closed and never reused; the next call connects afresh. A caller that finds the channel busy
(another call in flight) goes through the client instead, so concurrent callers never queue here.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError


class Channel:
    """execute(*args) on a connection of its own when free, through the client when busy."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._conn: Any = None
        self._busy = False

    async def execute(self, *args: Any) -> Any:
        if self._busy:
            return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        self._busy = True
        try:
            return await self._execute(args)
        finally:
            self._busy = False

    async def _execute(self, args: tuple[Any, ...]) -> Any:
        conn = self._conn or await self._connect()
        try:
            await conn.send_packed_command(conn.pack_command(*args), check_health=False)
            return await conn.read_response()
        except ResponseError:
            raise  # the server answered (NOSCRIPT, a refused command): the connection is in step
        except BaseException:
            self._conn = None
            await conn.disconnect(nowait=True)
            raise

    async def _connect(self) -> Any:
        pool = self._client.connection_pool
        self._conn = await connect_untimed(pool.connection_class, pool.connection_kwargs)
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)


async def connect_untimed(connection_class: Any, kwargs: dict[str, Any]) -> Any:
    """A connection made as a pool makes them, but without a socket timeout: every caller bounds
    its whole call with asyncio.timeout. A connect that fails or is cut off leaves nothing open."""
    conn = connection_class(**{**kwargs, "socket_timeout": None})
    try:
        await conn.connect()
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    return conn
