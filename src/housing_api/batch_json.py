"""POST /predict's body straight to float64 rows, and the rows back to the answer's `inputs`.

The validator (schemas.BatchValidator) stays the authority on what a body means: `decode_batch`
returns rows only for a body the validator certainly accepts, holding exactly the values the
validator would give, and None for anything else, which the caller then hands to the validator (its
rows, or the 422 naming the first bad row and field). So no error message is restated here, and a
body of another shape costs what it cost before. A plain batch is read by one pass of C
(_batchjson.c says what it accepts and why that is enough) into the canonical rows' bytes: no
object per row or per value, and the bounds checked as the numbers are read.

Without the compiled extension (installed without a C compiler) every body goes to the validator.
tests/unit/test_batch_json.py and the differential corpus (tests/unit/test_api_golden.py) hold both ways equal.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import orjson

from housing_api.keys import ROW_BYTES
from housing_api.schemas import BOUNDS

try:
    from housing_api import _batchjson
except ImportError:  # no C compiler at install time: the validator reads every body
    _batchjson = None  # type: ignore[assignment]

Matrix = np.ndarray[Any, np.dtype[np.float64]]


def _bound(rule: dict[str, Any], inclusive: str, exclusive: str, beyond: float) -> float:
    """The inclusive bound toward `beyond` (-inf: lower, inf: upper); the largest finite float
    when the rule sets none there, so that an infinity fails it too. `gt: x` is `>=` the next
    float above x, which for doubles is the same test."""
    if inclusive in rule:
        return float(rule[inclusive])
    if exclusive in rule:
        return float(np.nextafter(rule[exclusive], -beyond))
    return float(np.copysign(sys.float_info.max, beyond))


LOWER = np.array([_bound(b, "ge", "gt", -np.inf) for b in BOUNDS.values()], dtype="<f8").tobytes()
UPPER = np.array([_bound(b, "le", "lt", np.inf) for b in BOUNDS.values()], dtype="<f8").tobytes()
"""schemas.BOUNDS (in FEATURES order, as the C parser's names are) as inclusive bounds per column."""


def decode_batch(body: bytes, max_rows: int) -> bytes | None:
    """The canonical rows (keys.Row, joined) of a body of 1..max_rows plain valid rows; None for
    anything else (the validator says what is wrong, or what it accepts that this does not)."""
    if _batchjson is None:
        return None
    return _batchjson.decode(body, max_rows, LOWER, UPPER)


def encode_inputs(rows: bytes) -> bytes:
    """The rows as the JSON array of objects orjson.dumps gives for them as dicts in FEATURES order,
    without building the dicts: orjson writes the numbers, the C part puts the keys between them."""
    matrix = np.frombuffer(rows, dtype="<f8").reshape(-1, ROW_BYTES // 8)
    return _batchjson.inputs(orjson.dumps(matrix, option=orjson.OPT_SERIALIZE_NUMPY))
