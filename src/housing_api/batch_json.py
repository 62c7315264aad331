"""POST /predict's body straight to a float64 matrix, and the matrix back to the answer's `inputs`.

The validator (schemas.BatchValidator) stays the authority on what a body means: `decode_batch`
returns a matrix only for a body the validator certainly accepts, holding exactly the values the
validator would give, and None for anything else, which the caller then hands to the validator (its
rows, or the 422 naming the first bad row and field). So no error message is restated here, and a
hostile body costs what it cost before; a plain batch costs one orjson parse, one pass of
C-level conversions and a few vectorised comparisons, with no row validated one at a time.

Why each check is enough (tests/test_batch_json.py and the differential corpus hold it to that):
- orjson and pydantic-core parse a finite JSON number to the same float64 (correctly rounded both);
  the numbers neither may take (NaN, Infinity, 1e309, hex, `+1`) orjson refuses, and an integer
  is converted as pydantic converts it (to the nearest float64).
- Every `:` outside a string separates a key from its value. A body whose rows are all objects
  holding the eight features, with exactly eight `:` per row in the whole body, has no other key,
  no duplicate key, no nested value and no other string: nothing whose parsing could differ
  (nesting limits, surrogates, duplicate keys that pydantic reads the other way).
- The bounds are schemas.BOUNDS as comparisons on the whole matrix; NaN fails every comparison,
  and `gt` is `>=` the next float up, which for doubles is the same test.
"""

from __future__ import annotations

import sys
from itertools import chain, cycle
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from housing_api import FEATURES
from housing_api.schemas import BOUNDS

Matrix = np.ndarray[Any, np.dtype[np.float64]]
_VALUES = itemgetter(*FEATURES)
_NUMBERS = frozenset({int, float})  # bool is a subclass of int, not int: `true` is refused


def _bounds() -> tuple[Matrix, Matrix]:
    """schemas.BOUNDS as inclusive lower and upper bounds per column (finite: NaN and inf fail)."""
    lower = [_bound(b, "ge", "gt", -np.inf) for b in BOUNDS.values()]
    upper = [_bound(b, "le", "lt", np.inf) for b in BOUNDS.values()]
    return np.array(lower, dtype=np.float64), np.array(upper, dtype=np.float64)


def _bound(rule: dict[str, Any], inclusive: str, exclusive: str, beyond: float) -> float:
    """The inclusive bound toward `beyond` (-inf: lower, inf: upper); the largest finite float
    when the rule sets none there, so that an infinity fails it too."""
    if inclusive in rule:
        return float(rule[inclusive])
    if exclusive in rule:
        return float(np.nextafter(rule[exclusive], -beyond))
    return float(np.copysign(sys.float_info.max, beyond))


LOWER, UPPER = _bounds()


def decode_batch(body: bytes, max_rows: int) -> Matrix | None:
    """The (n, 8) float64 matrix of a body of 1..max_rows valid rows, in FEATURES order; None for
    anything else (the validator says what is wrong, or what it accepts that this does not)."""
    try:
        rows = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(rows) is not list or not 0 < len(rows) <= max_rows:
        return None
    if body.count(b":") != len(FEATURES) * len(rows):
        return None
    try:
        values = list(chain.from_iterable(map(_VALUES, rows)))
    except (KeyError, TypeError):  # a row that is not an object, or lacks a feature
        return None
    if not _NUMBERS.issuperset(map(type, values)):
        return None
    matrix = np.array(values, dtype=np.float64).reshape(len(rows), len(FEATURES))
    if not ((matrix >= LOWER) & (matrix <= UPPER)).all():
        return None
    return matrix


_KEYS = [
    b'},{"' + name.encode() + b'":' if i == 0 else b',"' + name.encode() + b'":' for i, name in enumerate(FEATURES)
]


def encode_inputs(matrix: Matrix) -> bytes:
    """The rows as the JSON array of objects orjson.dumps gives for them as dicts in FEATURES order,
    without building the dicts: orjson writes the numbers once and the keys are spliced between them."""
    numbers = orjson.dumps(matrix.ravel(), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")
    joined = b"".join(chain.from_iterable(zip(cycle(_KEYS), numbers)))
    return b"[" + joined[2:] + b"}]"  # the first row's "}," opened nothing
