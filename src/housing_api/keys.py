"""Pure functions: canonical row -> bytes -> digest -> cache key.

A row is canonical when its values are float64 in the model's feature order, so key order in the
JSON object does not matter and 42 and 42.0 are the same row. -0.0 is folded into 0.0 because the
model cannot tell them apart and they must share a cache entry.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from housing_api import FEATURES

Row = tuple[float, ...]
"""A canonical row: eight float64 values in FEATURES order."""

_PACK = struct.Struct("<8d")


def canonical_row(values: Mapping[str, Any]) -> Row:
    """Return the row's values as float64 in feature order (extra keys are ignored)."""
    return tuple(float(values[name]) + 0.0 for name in FEATURES)


def row_bytes(row: Row) -> bytes:
    """Fixed-width little-endian encoding: the same row always gives the same bytes."""
    return _PACK.pack(*row)


def row_digest(row: Row) -> str:
    """128-bit hex digest identifying one canonical row."""
    return hashlib.blake2b(row_bytes(row), digest_size=16).hexdigest()


def batch_digest(rows: Sequence[Row]) -> str:
    """The response's query_key: a digest of the whole canonical batch, in row order."""
    h = hashlib.blake2b(digest_size=16)
    for row in rows:
        h.update(row_bytes(row))
    return h.hexdigest()


def key_namespace(prefix: str, model_version: str, encoding: str) -> str:
    """Keys carry the model version, so a new model never reads an old model's answers, and the
    value encoding's tag (cache.VALUE_ENCODING), so a new encoding never reads an old one."""
    return f"{prefix}:{model_version[:16]}:{encoding}:"


def cache_keys(namespace: str, rows: Iterable[Row]) -> list[str]:
    """Redis keys for rows under one namespace."""
    return [namespace + row_digest(row) for row in rows]
