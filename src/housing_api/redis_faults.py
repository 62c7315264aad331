"""What a failed Redis call means: each kind of failure named once, and what the tier does about it.

A server that answers with an error is not an unreachable one. READONLY (a replica, or a master
demoted by a failover) and OOM (maxmemory with noeviction) refuse writes while reads still work:
the cache silently stops filling unless that is said. WRONGTYPE is one key of another type, not
an outage. So a failure is classified (only on the error path: the hit path never gets here) into
one of REASONS, the label of housing_api_redis_errors_total{op, reason}, and only an OUTAGE takes
Redis out of use for REDIS_RETRY_INTERVAL_S.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

UNREACHABLE = "unreachable"  # refused, reset, DNS, TLS handshake, LOADING: no answer to use
TIMEOUT = "timeout"  # no answer within the bound
NOAUTH = "noauth"  # NOAUTH / WRONGPASS: credentials missing or wrong, every command fails
NOPERM = "noperm"  # an ACL refuses a command or a key
READONLY = "readonly"  # a replica, or a demoted master: writes refused
OOM = "oom"  # maxmemory reached with noeviction: writes refused
WRONGTYPE = "wrongtype"  # a key of another type under one of ours: a miss, overwritten
REPLY = "reply"  # any other error reply
REASONS = (UNREACHABLE, TIMEOUT, NOAUTH, NOPERM, READONLY, OOM, WRONGTYPE, REPLY)
OUTAGES = frozenset({UNREACHABLE, TIMEOUT, NOAUTH})
"""Reasons that take Redis out of use for a while: nothing it would answer is usable."""
WRITES_REFUSED = {READONLY: "readonly", OOM: "full"}
"""Reasons a write is refused while reads still work, and how /readyz names the cache then."""
LOG_EVERY_S = 10.0


def classify(exc: BaseException) -> str:
    """The reason label for a failed call. Order matters: redis-py's AuthenticationError and
    BusyLoadingError are ConnectionErrors, and asyncio's TimeoutError is an OSError."""
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return TIMEOUT
    if isinstance(exc, AuthenticationError):
        return NOAUTH
    if isinstance(exc, RedisConnectionError | BusyLoadingError | OSError):
        return UNREACHABLE
    if isinstance(exc, ReadOnlyError):
        return READONLY
    if isinstance(exc, OutOfMemoryError):
        return OOM
    if isinstance(exc, NoPermissionError):
        return NOPERM
    if isinstance(exc, ResponseError):
        return _reply_reason(str(exc))
    return REPLY


def _reply_reason(message: str) -> str:
    # redis-py keeps the code in the message of replies it has no class for, and a script's
    # redis.call error arrives as ERR with the inner reply's code inside it.
    upper = message.upper()
    for code, reason in (("WRONGTYPE", WRONGTYPE), ("READONLY", READONLY), ("OOM ", OOM), ("NOPERM", NOPERM)):
        if upper.startswith(code) or f" {code}" in upper or f"-{code}" in upper:
            return reason
    return REPLY


class BurstLog:
    """Log a fault at most once per LOG_EVERY_S per reason, with how many were not logged."""

    def __init__(self, logger: logging.Logger, every_s: float = LOG_EVERY_S) -> None:
        self._log = logger
        self._every_s = every_s
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def warning(self, reason: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -self._every_s) < self._every_s:
            self._quiet[reason] = self._quiet.get(reason, 0) + 1
            return
        quiet, self._quiet[reason], self._last[reason] = self._quiet.get(reason, 0), 0, now
        also = f" ({quiet} more since the last report)" if quiet else ""
        self._log.warning(message + also, *args)
