"""Sentinel mode: the client asks the sentinels where the master is, and asks again after a failover.

redis-py's SentinelConnectionPool looks the master up on every new connection and drops a connection
whose server answers READONLY (a master demoted by a failover). Nothing else changes: the tier's
channels connect through the pool's connection class (redis_channel.py), so a channel whose master
died reconnects to whichever server the sentinels name next, and until they name one the call fails
fast (MasterNotFoundError is a ConnectionError: an outage, retried every REDIS_RETRY_INTERVAL_S).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from housing_api.config import redis_database, redis_hosts

SENTINEL_KWARGS = frozenset({"socket_timeout", "socket_connect_timeout", "username", "password", "retry"})
"""What of the servers' connection settings the sentinels' connections take too (all but the database)."""


def sentinel_master(url: str, master: str, client_kwargs: Mapping[str, Any]) -> tuple[aioredis.Redis, Sentinel]:
    """A client of `master` as the sentinels in `url` name it, and the sentinels' own client (to close).

    The sentinels get the same credentials and TLS as the servers (one Secret, one surface: Redis's
    `sentinel auth-pass` and the sentinels' `requirepass` are set from it), and the same short
    timeouts: asking a sentinel is part of connecting, which is bounded by the caller."""
    tls = url.startswith("rediss://")
    kwargs = {**client_kwargs, **({"ssl": True} if tls else {})}
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k in SENTINEL_KWARGS or k.startswith("ssl")}
    sentinels = Sentinel(redis_hosts(url, 26379), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    client = sentinels.master_for(master, redis_class=aioredis.Redis, db=redis_database(url), **kwargs)
    return client, sentinels
