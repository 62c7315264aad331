import hashlib
import math
import random
import struct
from typing import Any

import pytest

from housing_api import keys
from housing_api.keys import (
    ROW_BYTES,
    SMALL_BATCH,
    batch_digest,
    cache_keys,
    canonical_batch,
    canonical_row,
    key_namespace,
    row_digest,
    row_values,
    rows_matrix,
    split_rows,
)

ROW = {"MedInc": 8.3252, "HouseAge": 42, "AveRooms": 6.98, "AveBedrms": 1.02,
       "Population": 322, "AveOccup": 2.55, "Latitude": 37.88, "Longitude": -122.23}  # fmt: skip


def test_key_order_does_not_matter() -> None:
    reversed_row = dict(reversed(list(ROW.items())))
    assert row_digest(canonical_row(reversed_row)) == row_digest(canonical_row(ROW))


@pytest.mark.parametrize(("a", "b"), [(42, 42.0), (0, -0.0), (322, 322.0)])
def test_equal_numbers_are_the_same_row(a: float, b: float) -> None:
    assert row_digest(canonical_row({**ROW, "HouseAge": a})) == row_digest(canonical_row({**ROW, "HouseAge": b}))


@pytest.mark.parametrize("field", list(ROW))
def test_any_changed_value_changes_the_digest(field: str) -> None:
    changed = {**ROW, field: ROW[field] + 1e-9}
    assert row_digest(canonical_row(changed)) != row_digest(canonical_row(ROW))


def test_extra_keys_are_ignored() -> None:
    assert canonical_row({**ROW, "Extra": 1}) == canonical_row(ROW)


def test_new_model_version_changes_the_key() -> None:
    row = canonical_row(ROW)
    assert cache_keys(key_namespace("p", "a" * 64, "r1"), [row]) != cache_keys(
        key_namespace("p", "b" * 64, "r1"), [row]
    )


def test_batch_digest_depends_on_order_and_content() -> None:
    a, b = canonical_row(ROW), canonical_row({**ROW, "MedInc": 1.0})
    assert batch_digest([a, b]) != batch_digest([b, a])
    assert batch_digest([a, b]) == batch_digest([canonical_row(dict(reversed(list(ROW.items())))), b])
    assert len(batch_digest([a])) == 32


# -- the vectorised batch path: the same rows, bytes and digests as the per-row functions -------
def _variants() -> list[dict[str, Any]]:
    rng = random.Random(12)
    rows: list[dict[str, Any]] = [ROW, dict(reversed(list(ROW.items()))), {**ROW, "Extra": "x"}]
    rows += [{**ROW, "HouseAge": 42, "Population": 322}, {**ROW, "HouseAge": -0.0, "Latitude": -0.0}]
    rows += [{**ROW, "Population": 1e300, "AveBedrms": 5e-324}]
    rows += [{name: rng.uniform(-100, 100) for name in reversed(ROW)} for _ in range(50)]
    return rows


# Sizes on both sides of SMALL_BATCH, so the per-row path and the numpy path are both held to it.
SIZES = [1, 2, SMALL_BATCH - 1, SMALL_BATCH, SMALL_BATCH + 1, 56]


@pytest.mark.parametrize("size", SIZES)
def test_canonical_batch_rows_are_canonical_row_of_each_row(size: int) -> None:
    rows = _variants()[-size:]
    batch = canonical_batch(rows)
    assert batch.rows == [canonical_row(r) for r in rows]
    assert all(type(row) is bytes and len(row) == ROW_BYTES for row in batch.rows)
    assert all(type(v) is float for row in batch.rows for v in row_values(row))


@pytest.mark.parametrize("size", SIZES)
def test_canonical_batch_keeps_query_key_and_row_keys_byte_identical(size: int) -> None:
    # Keys already in Redis must still be found: the digest is blake2b-128 of the little-endian
    # float64 row, computed here independently of keys.py.
    rows = _variants()[:size]
    batch = canonical_batch(rows)
    canonical = [tuple(float(r[name]) + 0.0 for name in ROW) for r in rows]
    expected_rows = [hashlib.blake2b(struct.pack("<8d", *c), digest_size=16).hexdigest() for c in canonical]
    whole = hashlib.blake2b(b"".join(struct.pack("<8d", *c) for c in canonical), digest_size=16).hexdigest()
    assert [row_digest(r) for r in batch.rows] == expected_rows
    assert batch.query_key == whole == batch_digest(batch.rows)
    assert batch.rows == [struct.pack("<8d", *c) for c in canonical]
    assert rows_matrix(batch.rows).tolist() == [list(c) for c in canonical]


@pytest.mark.parametrize("size", [2, SMALL_BATCH + 2])
@pytest.mark.parametrize(("value", "folded"), [(-0.0, True), (0.0, False), (0, False), (-1.0, False)])
def test_canonical_batch_reports_a_folded_negative_zero(value: float, folded: bool, size: int) -> None:
    batch = canonical_batch([ROW, {**ROW, "HouseAge": value}, *[ROW] * (size - 2)])
    assert batch.folded_negative_zero is folded
    assert math.copysign(1.0, row_values(batch.rows[1])[1]) == (1.0 if value == 0 else math.copysign(1.0, value))


@pytest.mark.parametrize("size", [2, SMALL_BATCH + 2])
def test_canonical_batch_needs_every_feature(size: int) -> None:
    without = {k: v for k, v in ROW.items() if k != "Latitude"}
    with pytest.raises(KeyError):
        canonical_batch([*[ROW] * (size - 1), without])


def test_keys_carry_the_value_encoding() -> None:
    row = canonical_row(ROW)
    assert cache_keys(key_namespace("p", "a" * 64, "r1"), [row]) != cache_keys(
        key_namespace("p", "a" * 64, "r2"), [row]
    )


def test_split_rows_is_canonical_batch_of_the_joined_rows() -> None:
    rows = [{**ROW, "MedInc": 1 + i / 10} for i in range(12)]
    batch = canonical_batch(rows)
    split = split_rows(b"".join(batch.rows))
    assert (split.rows, split.query_key) == (batch.rows, batch.query_key)


@pytest.mark.parametrize("namespace", ["housing-api:0123456789abcdef:r1:", "", "prefix-ü:"])
def test_cache_keys_are_hashlibs_digests_of_every_row(namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The compiled path (_rowkeys.c, one BLAKE2b block per row) against hashlib, on rows of every
    # length it takes (a canonical row is 64 bytes), and the same keys without it.
    rng = random.Random(7)
    rows = [rng.randbytes(n) for n in range(129)] + [rng.randbytes(ROW_BYTES) for _ in range(200)]
    expected = [namespace + hashlib.blake2b(row, digest_size=16).hexdigest() for row in rows]
    assert cache_keys(namespace, rows) == expected
    assert cache_keys(namespace, iter(rows)) == expected
    monkeypatch.setattr(keys, "_rowkeys", None)
    assert cache_keys(namespace, rows) == expected


def test_compiled_cache_keys_refuse_what_is_not_one_block() -> None:
    if keys._rowkeys is None:
        pytest.skip("housing_api._rowkeys is not built")
    with pytest.raises(ValueError, match="at most 128"):
        keys._rowkeys.keys("ns:", [b"x" * 129])
    with pytest.raises(ValueError, match="at most 128"):
        keys._rowkeys.keys("ns:", ["not bytes"])  # type: ignore[list-item]
