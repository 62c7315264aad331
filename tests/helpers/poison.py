"""What a shared Redis may hold under our keys that this release would not have written, and the keys
themselves: the poisoned-cache tests write these where the service will read them."""

from __future__ import annotations

from typing import Any

from housing_api.cache import VALUE_ENCODING
from housing_api.http_cache import ENCODING as HTTP_ENCODING
from housing_api.keys import canonical_row, key_namespace, row_digest

POISON: list[bytes] = [
    b"abc", b"", b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"1e999", b"-1e999", b"x" * 100_000,
    b'{"prediction": 4.1}', b"[4.1]", b" 4.15", b"4.15\n", b"4_1", b"0x1p2", b"\xff\xfe",
]  # fmt: skip
"""Row values: not the exact bytes encode_value writes for a finite float."""
GET_POISON: list[bytes] = [
    b"abc", b"", b"null", b"{}", b'{"prediction": [null]}', b"[1, 2]",
    b'{"query_key": "q", "inputs": [{"MedInc": 1}], "prediction": [1.0], "model_version": "x"}',
]  # fmt: skip
"""GET /predict response entries: not a whole response of this row and version."""


def row_key(prefix: str, version: str, row: dict[str, Any]) -> str:
    return key_namespace(prefix, version, VALUE_ENCODING) + row_digest(canonical_row(row))


def http_key(prefix: str, version: str, row: dict[str, Any]) -> str:
    return f"{prefix}-http:{version[:16]}:{HTTP_ENCODING}:{row_digest(canonical_row(row))}"
