"""Pure functions: canonical row -> bytes -> digest -> cache key.

A row is canonical when its values are float64 in the model's feature order, so key order in the
JSON object does not matter and 42 and 42.0 are the same row. -0.0 is folded into 0.0 because the
model cannot tell them apart and they must share a cache entry.

canonical_batch() does the same for a whole request at once with numpy (one array, one bytes
object, one batch digest) instead of once per row in Python; its rows, bytes and digests are the
same as the per-row functions' (tests/test_keys.py holds them to that).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from housing_api import FEATURES

Row = tuple[float, ...]
"""A canonical row: eight float64 values in FEATURES order."""

_PACK = struct.Struct("<8d")
ROW_BYTES = _PACK.size
_VALUES = itemgetter(*FEATURES)


def canonical_row(values: Mapping[str, Any]) -> Row:
    """Return the row's values as float64 in feature order (extra keys are ignored)."""
    return tuple(float(values[name]) + 0.0 for name in FEATURES)


def row_bytes(row: Row) -> bytes:
    """Fixed-width little-endian encoding: the same row always gives the same bytes."""
    return _PACK.pack(*row)


def row_digest(row: Row) -> str:
    """128-bit hex digest identifying one canonical row."""
    return hashlib.blake2b(row_bytes(row), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class CanonicalBatch:
    """A request's rows, canonical, with their encoding and the batch digest computed once."""

    rows: list[Row]
    data: bytes
    """row_bytes of every row, in order (ROW_BYTES each)."""
    query_key: str
    """batch_digest(rows)."""
    folded_negative_zero: bool
    """True when some input value was -0.0 (the canonical row holds 0.0 there)."""


SMALL_BATCH = 8
"""Below this many rows numpy's fixed cost is more than the per-row loop it saves."""


def canonical_batch(rows: Sequence[Mapping[str, Any]]) -> CanonicalBatch:
    """canonical_row for every row, vectorised; extra keys are ignored."""
    if len(rows) < SMALL_BATCH:
        return _small_batch(rows)
    n = len(rows)
    # One C-level pass: itemgetter picks the features in order, fromiter converts them to float64.
    raw = np.fromiter(chain.from_iterable(map(_VALUES, rows)), np.float64, n * len(FEATURES))
    matrix = raw + 0.0  # -0.0 + 0.0 == 0.0, as in canonical_row
    data = matrix.astype("<f8", copy=False).tobytes()
    zeros = raw == 0.0
    return CanonicalBatch(
        rows=list(map(tuple, matrix.reshape(n, len(FEATURES)).tolist())),
        data=data,
        query_key=hashlib.blake2b(data, digest_size=16).hexdigest(),
        folded_negative_zero=bool(zeros.any() and np.signbit(raw[zeros]).any()),
    )


def _small_batch(rows: Sequence[Mapping[str, Any]]) -> CanonicalBatch:
    canonical = [canonical_row(r) for r in rows]
    data = b"".join(map(row_bytes, canonical))
    # Packing the values as given differs from the canonical bytes only where a -0.0 was folded.
    folded = b"".join(_PACK.pack(*_VALUES(r)) for r in rows) != data
    return CanonicalBatch(canonical, data, hashlib.blake2b(data, digest_size=16).hexdigest(), folded)


def row_digests(data: bytes) -> list[str]:
    """row_digest of each row encoded in `data` (CanonicalBatch.data), without unpacking them."""
    blake2b = hashlib.blake2b
    return [blake2b(data[i : i + ROW_BYTES], digest_size=16).hexdigest() for i in range(0, len(data), ROW_BYTES)]


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
