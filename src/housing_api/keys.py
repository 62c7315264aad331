"""Pure functions: canonical row -> digest -> cache key.

A row is canonical when its values are float64 in the model's feature order, so key order in the
JSON object does not matter and 42 and 42.0 are the same row. -0.0 is folded into 0.0 because the
model cannot tell them apart and they must share a cache entry.

A canonical row is held as its fixed-width encoding (`Row`: 64 bytes, eight little-endian
float64), not as a tuple of floats: bytes hash once and keep the hash, so the in-process tier and
the single-flight map look a row up without rehashing eight floats each time; the model's matrix
is the rows' bytes joined; and the Redis key's digest is of those bytes as they are.

canonical_batch() canonicalises a whole request at once with numpy (one array, one bytes object)
instead of once per row in Python; its rows and digests are the same as the per-row functions'
(tests/unit/test_keys.py holds them to that). cache_keys() computes a micro-batch's keys in one
call of C (_rowkeys.c) where it is built, the same strings as row_digest's one by one.
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

try:
    from housing_api import _rowkeys
except ImportError:  # no C compiler at install time: hashlib, row by row
    _rowkeys = None  # type: ignore[assignment]

Row = bytes
"""A canonical row: its eight float64 values in FEATURES order, little-endian (ROW_BYTES bytes)."""

_PACK = struct.Struct("<8d")
ROW_BYTES = _PACK.size
_VALUES = itemgetter(*FEATURES)


def canonical_row(values: Mapping[str, Any]) -> Row:
    """The row's values as float64 in feature order, encoded (extra keys are ignored)."""
    return _PACK.pack(*(float(values[name]) + 0.0 for name in FEATURES))


def row_values(row: Row) -> tuple[float, ...]:
    """The eight float values of an encoded row."""
    return _PACK.unpack(row)


def rows_matrix(rows: Iterable[Row]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The (n, 8) float64 matrix of encoded rows, for the model."""
    return np.frombuffer(b"".join(rows), dtype="<f8").reshape(-1, len(FEATURES))


def row_digest(row: Row) -> str:
    """128-bit hex digest identifying one canonical row."""
    return hashlib.blake2b(row, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class CanonicalBatch:
    """A request's rows, canonical, with the batch digest computed once."""

    rows: list[Row]
    query_key: str
    """batch_digest(rows)."""
    folded_negative_zero: bool
    """True when some input value was -0.0 (the canonical row holds 0.0 there); False when the
    input values are not known (split_rows)."""


SMALL_BATCH = 8
"""Below this many rows numpy's fixed cost is more than the per-row loop it saves."""


def canonical_batch(rows: Sequence[Mapping[str, Any]]) -> CanonicalBatch:
    """canonical_row for every row, vectorised; extra keys are ignored."""
    if len(rows) < SMALL_BATCH:
        return _small_batch(rows)
    n = len(rows)
    # One C-level pass: itemgetter picks the features in order, fromiter converts them to float64.
    raw = np.fromiter(chain.from_iterable(map(_VALUES, rows)), np.float64, n * len(FEATURES))
    data = (raw + 0.0).astype("<f8", copy=False).tobytes()  # -0.0 + 0.0 == 0.0, as in canonical_row
    zeros = raw == 0.0
    return CanonicalBatch(
        rows=[data[i : i + ROW_BYTES] for i in range(0, len(data), ROW_BYTES)],
        query_key=hashlib.blake2b(data, digest_size=16).hexdigest(),
        folded_negative_zero=bool(zeros.any() and np.signbit(raw[zeros]).any()),
    )


def split_rows(data: bytes) -> CanonicalBatch:
    """The batch of canonical rows already joined into one bytes object (batch_json.decode_batch's)."""
    rows = [data[i : i + ROW_BYTES] for i in range(0, len(data), ROW_BYTES)]
    return CanonicalBatch(rows, hashlib.blake2b(data, digest_size=16).hexdigest(), folded_negative_zero=False)


def _small_batch(rows: Sequence[Mapping[str, Any]]) -> CanonicalBatch:
    canonical = [canonical_row(r) for r in rows]
    # Packing the values as given differs from the canonical bytes only where a -0.0 was folded.
    folded = any(_PACK.pack(*_VALUES(r)) != c for r, c in zip(rows, canonical, strict=True))
    return CanonicalBatch(canonical, batch_digest(canonical), folded)


def batch_digest(rows: Sequence[Row]) -> str:
    """The response's query_key: a digest of the whole canonical batch, in row order."""
    return hashlib.blake2b(b"".join(rows), digest_size=16).hexdigest()


def key_namespace(prefix: str, model_version: str, encoding: str) -> str:
    """Keys carry the model version, so a new model never reads an old model's answers, and the
    value encoding's tag (cache.VALUE_ENCODING), so a new encoding never reads an old one."""
    return f"{prefix}:{model_version[:16]}:{encoding}:"


def cache_keys(namespace: str, rows: Iterable[Row]) -> list[str]:
    """Redis keys for rows under one namespace: namespace + row_digest(row) for each."""
    if _rowkeys is not None:
        return _rowkeys.keys(namespace, rows if isinstance(rows, list) else list(rows))
    return [namespace + row_digest(row) for row in rows]
