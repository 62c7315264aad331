"""Cluster mode: one pipelined round trip per master per micro-batch, for reads and for writes.

Redis Cluster refuses a command whose keys hash to different slots (CROSSSLOT), even on one node,
so a micro-batch's one MGET and one EVALSHA (cache.py) cannot be sent as they are. Here the rows are
grouped by the master that serves their slot (the client's copy of the slot map), and each master
gets one pipeline: an MGET per slot for reads, a SET ... EX per row for writes. The masters are
asked in parallel, under the same bound as one standalone call. Why not hash-tagged buckets (one
slot per bucket, one MGET per bucket): docs/reliability.md, "Redis Cluster".

A topology change is followed, not failed. A MOVED or ASK reply is followed once, in a second round
trip that only a moving slot costs, and MOVED updates the slot map. A master that cannot be reached
makes its rows misses (they go to the model) and is skipped for REDIS_RETRY_INTERVAL_S while the
other masters still answer; the slot map is refreshed in the background until its replica has taken
over. Only when no master answers is the whole tier out of use, as a standalone Redis would be.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, ResponseError

from housing_api.cache import RedisTier, with_c_packing
from housing_api.metrics import GET, PING, SET, RedisOp, ServiceMetrics
from housing_api.redis_channel import connect_untimed
from housing_api.redis_faults import OUTAGES, classify

log = logging.getLogger(__name__)
REFRESH_EVERY_S = 0.25
"""Least time between two slot-map refreshes (each asks one node for CLUSTER SLOTS)."""
READ, WRITE = "read", "write"
Command = tuple[Any, ...]


class NodeDown(ConnectionError):
    """The master failed a moment ago and is skipped until REDIS_RETRY_INTERVAL_S has passed."""


class NodeLink:
    """One connection to one master for one stage (as redis_channel.Channel is for one server): a
    pipeline at a time, no socket timeout (the caller bounds the whole call). A busy link lends a
    connection from the node's own pool, so concurrent callers never queue here."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self._conn: Any = None
        self._busy = False

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """A reply per command, an error reply (MOVED, READONLY, ...) as its exception."""
        if self._busy:
            return await self._lent(commands)
        self._busy = True
        try:
            conn = self._conn or await self._connect()
            try:
                return await exchange(conn, commands)
            except BaseException:
                self._conn = None  # it may still owe replies: never reused
                await conn.disconnect(nowait=True)
                raise
        finally:
            self._busy = False

    async def _lent(self, commands: Sequence[Command]) -> list[Any]:
        conn = self.node.acquire_connection()
        try:
            if not conn.is_connected:
                await conn.connect()  # type: ignore[no-untyped-call]
            return await exchange(conn, commands)
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            self.node.release(conn)

    async def _connect(self) -> Any:
        node = self.node
        self._conn = await connect_untimed(with_c_packing(node.connection_class), node.connection_kwargs)
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)


async def exchange(conn: Any, commands: Sequence[Command]) -> list[Any]:
    """Send every command in one write, then read as many replies: one round trip."""
    await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:  # the server answered: the connection is in step
            replies.append(exc)
    return replies


class ClusterTier(RedisTier):
    """The shared tier on a Redis Cluster; the same contract as RedisTier (failures are misses)."""

    def __init__(
        self, nodes: Sequence[tuple[str, int]], timeout_s: float, ttl_s: int, retry_interval_s: float,
        metrics: ServiceMetrics, connection: Mapping[str, Any] | None = None, tls: bool = False,
    ) -> None:  # fmt: skip
        self._init_state(timeout_s, ttl_s, retry_interval_s, metrics)
        kwargs = self.client_kwargs(connection)
        # The cluster client is used for its slot map and its nodes (discovered from the seeds),
        # not to send the batch's commands: it would send a command per key and retry on its own.
        self.cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            require_full_coverage=False, ssl=tls, **kwargs,
        )  # fmt: skip
        self._links: dict[tuple[str, str], NodeLink] = {}
        self._node_down: dict[str, float] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshed_at = float("-inf")
        self.round_trips: Counter[tuple[str, str]] = Counter()
        """Pipelines sent, by (op, node): one of each op per master per micro-batch, plus redirects."""
        self.redirects: Counter[str] = Counter()
        """Commands followed to another node, by "moved" and "ask"."""

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await self.cluster.initialize()
                (reply,) = await self._run(READ, PING, [(0, ("PING",))])
            if isinstance(reply, Exception):
                raise reply
        except Exception as exc:
            return not self._failed(PING, exc)
        self._succeeded()
        return True

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None] | None:
        """An MGET per slot, one pipeline per master; a master that fails gives misses for its rows."""
        if not keys or not self.usable():
            return None
        slots: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            slots.setdefault(key_slot(key.encode()), []).append(i)
        work = [(slot, ("MGET", *(keys[i] for i in rows))) for slot, rows in slots.items()]
        try:
            async with asyncio.timeout(self.timeout_s):
                replies = await self._run(READ, GET, work)
        except Exception as exc:  # a cache failure is a miss, whatever its kind
            self._failed(GET, exc)
            return None
        values: list[bytes | None] = [None] * len(keys)
        for rows, reply in zip(slots.values(), replies, strict=True):
            if not isinstance(reply, Exception):
                for i, value in zip(rows, reply, strict=True):
                    values[i] = value
        self._succeeded()
        return values

    async def _set_ex(self, items: Sequence[tuple[str, bytes]], ttl_s: int) -> None:
        work = [(key_slot(key.encode()), ("SET", key, value, "EX", ttl_s)) for key, value in items]
        await self._run(WRITE, SET, work)

    async def get_with_ttl(self, key: str) -> tuple[int, bytes | None]:
        """For the GET response cache: TTL and GET of one key, one round trip to its master."""
        if not self.usable():
            return 0, None
        slot = key_slot(key.encode())
        try:
            async with asyncio.timeout(self.timeout_s):
                ttl, value = await self._run(READ, GET, [(slot, ("TTL", key)), (slot, ("GET", key))])
        except Exception as exc:
            self._failed(GET, exc)
            return 0, None
        if isinstance(ttl, Exception) or isinstance(value, Exception):
            return 0, None  # counted where it failed (_run)
        self._succeeded()
        return max(int(ttl), 0), value

    async def _run(self, purpose: str, op: RedisOp, work: Sequence[tuple[int, Command]]) -> list[Any]:
        """A reply or an exception per (slot, command): one pipeline per master, in parallel, MOVED
        and ASK followed once. Raises only when no master answered (the tier is out of use then)."""
        await self.cluster.initialize()  # the slot map from the seed nodes, the first time only
        replies: list[Any] = [None] * len(work)
        groups: dict[str, tuple[ClusterNode, list[int]]] = {}
        for i, (slot, _) in enumerate(work):
            node = self.cluster.nodes_manager.get_node_from_slot(slot)
            groups.setdefault(node.name, (node, []))[1].append(i)
        sent = [self._send(purpose, op, node, rows, work, replies) for node, rows in groups.values()]
        # One master (a small batch, or the GET cache's one key): no tasks to gather.
        answered = await sent[0] if len(sent) == 1 else sum(await asyncio.gather(*sent))
        if redirected := [i for i, reply in enumerate(replies) if isinstance(reply, AskError)]:
            await self._follow(purpose, op, redirected, work, replies)
        if not answered:
            raise next(reply for reply in replies if isinstance(reply, Exception))
        return replies

    async def _send(
        self, purpose: str, op: RedisOp, node: ClusterNode, rows: list[int], work: Sequence[tuple[int, Command]],
        replies: list[Any], asking: bool = False,
    ) -> bool:  # fmt: skip
        """Fill `replies` at `rows` from one pipeline to `node`; False when the node did not answer."""
        if time.monotonic() < self._node_down.get(node.name, 0.0):
            error: Exception = NodeDown(f"Redis Cluster node {node.name} failed a moment ago")
            for i in rows:
                replies[i] = error
            return False
        commands = [work[i][1] for i in rows]
        if asking:  # ASK: this one command may go to the node importing the slot
            commands = [c for command in commands for c in (("ASKING",), command)]
        try:
            got = await self._link(purpose, node).pipeline(commands)
        except Exception as exc:
            self._node_failed(node, op, exc)
            for i in rows:
                replies[i] = exc
            return False
        self.round_trips[op, node.name] += 1
        for i, reply in zip(rows, got[1::2] if asking else got, strict=True):
            if isinstance(reply, Exception) and not isinstance(reply, AskError):
                self._reply_failed(op, reply)
            replies[i] = reply
        return True

    async def _follow(
        self, purpose: str, op: RedisOp, redirected: list[int], work: Sequence[tuple[int, Command]], replies: list[Any]
    ) -> None:
        """Send each redirected command where its MOVED or ASK says, one pipeline per target node."""
        manager = self.cluster.nodes_manager
        targets: dict[tuple[str, bool], tuple[ClusterNode, list[int]]] = {}
        for i in redirected:
            redirect: AskError = replies[i]
            moved = isinstance(redirect, MovedError)
            self.redirects["moved" if moved else "ask"] += 1
            if moved:
                await manager.move_slot(redirect)  # the slot map follows the slot
            node = manager.get_node(redirect.host, redirect.port) or ClusterNode(
                redirect.host, redirect.port, **manager.connection_kwargs
            )
            targets.setdefault((node.name, not moved), (node, []))[1].append(i)
        self._refresh_topology()  # a slot moved: others probably did too
        await asyncio.gather(
            *(
                self._send(purpose, op, node, rows, work, replies, asking)
                for (_, asking), (node, rows) in targets.items()
            )
        )

    def _link(self, purpose: str, node: ClusterNode) -> NodeLink:
        link = self._links.get((purpose, node.name))
        if link is None or link.node is not node:
            link = self._links[purpose, node.name] = NodeLink(node)
        return link

    def _node_failed(self, node: ClusterNode, op: RedisOp, exc: BaseException) -> None:
        reason = classify(exc)
        self.metrics.redis_errors.labels(op, reason).inc()
        if reason in OUTAGES:
            self._node_down[node.name] = time.monotonic() + self.retry_interval_s
        self._burst.warning(
            f"node:{reason}", "Redis Cluster node %s failed (%s); its rows are misses, asking the cluster for its "
            "slots again", node.name, reason,
        )  # fmt: skip
        self._refresh_topology()

    def _reply_failed(self, op: RedisOp, exc: BaseException) -> None:
        reason = classify(exc)
        self.metrics.redis_errors.labels(op, reason).inc()
        self._burst.warning(reason, "Redis Cluster %s failed (%s: %s); treated as a miss", op, reason, exc)
        if "CLUSTERDOWN" in str(exc) or "TRYAGAIN" in str(exc):
            self._refresh_topology()

    def _refresh_topology(self) -> None:
        """Ask the cluster for its slot map again, in the background, at most every REFRESH_EVERY_S."""
        now = time.monotonic()
        busy = self._refreshing is not None and not self._refreshing.done()
        if busy or now - self._refreshed_at < REFRESH_EVERY_S:
            return
        self._refreshed_at = now
        self._refreshing = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await self.cluster.nodes_manager.initialize()
        except Exception as exc:  # the next failure asks again
            self._burst.warning("topology", "Redis Cluster slot map refresh failed (%s: %s)", type(exc).__name__, exc)

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for link in self._links.values():
            await link.close()
        await self.cluster.aclose()
