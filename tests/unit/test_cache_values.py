"""The Redis value encoding (cache.encode_value, encode_values, decode_value): exact round trips,
one orjson call per batch, and the bytes main wrote (repr) wherever a prediction can be."""

from __future__ import annotations

import random

import pytest

from housing_api.cache import decode_value, encode_value, encode_values


def test_a_batch_encodes_as_each_value_would_and_reads_back_exactly() -> None:
    r = random.Random(3)
    values = [r.uniform(-10, 10) * 10 ** r.randint(-8, 12) for _ in range(2000)]
    assert encode_values(values) == [encode_value(v) for v in values]
    assert [decode_value(raw) for raw in encode_values(values)] == values
    assert encode_values([]) == []


def test_values_from_1e_minus_4_up_are_the_bytes_repr_wrote() -> None:
    """So the values main's pods wrote (repr) are read, not recomputed, across a rolling deploy."""
    r = random.Random(4)
    values = [10 ** r.uniform(-4, 15.9) for _ in range(20_000)]
    assert [encode_value(v) for v in values] == [repr(v).encode() for v in values]


@pytest.mark.parametrize("raw", [b"1e-05", b"4.15\n", b" 4.15", b"nan", b"1e999", b"4.150", b""])
def test_any_other_spelling_is_a_miss_not_a_misread(raw: bytes) -> None:
    assert decode_value(raw) is None
