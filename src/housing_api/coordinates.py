"""Derived coordinate features: linear combinations of Latitude and Longitude, appended as columns.

Trees split on one column at a time, so a boundary that runs diagonally across the map (a coast, a
valley) costs a tree a staircase of splits on latitude and longitude; a column a*lat + b*lon puts
such a boundary on a single threshold. The columns are computed from the two coordinates every
request already carries, so they change the model, not the API (docs/model.md).

The coefficients are only ±1 and ±2 on purpose: with latitude in [-90, 90] and longitude in
[-180, 180], each product is exact and each derived value is one correctly rounded addition, so
numpy, C, with or without FMA, all give the same bits. The fast path (fastpath.py) calls this very
function before its kernel, and the trained Pipeline calls it before scikit-learn's predict.

This module imports numpy only: the service uses it without scikit-learn, and MLServer (make
bench-peers) imports it when it unpickles the Pipeline in model.joblib.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from housing_api import FEATURES

__all__ = [
    "COEFFICIENTS",
    "LATITUDE",
    "LONGITUDE",
    "PAIRS",
    "append_derived",
    "append_with",
    "check_pairs",
    "coefficients",
    "derived_names",
]

Matrix = np.ndarray[Any, np.dtype[np.float64]]
Vector = np.ndarray[Any, np.dtype[np.float64]]
Pairs = tuple[tuple[int, int], ...]

LATITUDE = FEATURES.index("Latitude")
LONGITUDE = FEATURES.index("Longitude")

PAIRS: Pairs = ((1, 1), (1, -1), (1, 2), (1, -2), (2, 1), (2, -1))
"""(a, b) for each derived column a*Latitude + b*Longitude, in column order after the raw features."""

COEFFICIENTS = frozenset({-2, -1, 1, 2})
"""The coefficients whose products with a bounded coordinate are exact (see the module docstring)."""


def check_pairs(pairs: Sequence[Sequence[int]]) -> Pairs:
    """The pairs as a tuple of int pairs; ValueError for a coefficient outside COEFFICIENTS."""
    checked = tuple((int(a), int(b)) for a, b in pairs)
    for a, b in checked:
        if a not in COEFFICIENTS or b not in COEFFICIENTS:
            raise ValueError(f"derived pair ({a}, {b}) has a coefficient outside {sorted(COEFFICIENTS)}")
    return checked


def append_derived(X: Any, pairs: Sequence[Sequence[int]] = PAIRS) -> Matrix:
    """X (n, 8) in FEATURES order with one column a*Latitude + b*Longitude appended per pair."""
    return append_with(X, *coefficients(pairs))


def coefficients(pairs: Sequence[Sequence[int]]) -> tuple[Vector, Vector]:
    """The pairs' a and b as float64 vectors (small integers: exact), for append_with."""
    table = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    return np.ascontiguousarray(table[:, 0]), np.ascontiguousarray(table[:, 1])


def append_with(X: Any, a: Vector, b: Vector) -> Matrix:
    """append_derived with the coefficients already split out: what the fast path calls per batch
    (append_derived calls it too, so both compute the columns with the very same operations)."""
    rows = np.asarray(X, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(FEATURES):
        raise ValueError(f"X has shape {rows.shape}; expected (n, {len(FEATURES)})")
    n_inputs = rows.shape[1]
    out = np.empty((rows.shape[0], n_inputs + len(a)), dtype=np.float64)
    out[:, :n_inputs] = rows
    # inf - inf is NaN here as in scikit-learn's own call of this function: the same answer, no
    # warning (the API only lets finite, bounded coordinates through anyway).
    with np.errstate(invalid="ignore", over="ignore"):
        # Two exact products, then one rounding: np.multiply, np.add, never a fused multiply-add.
        np.add(rows[:, LATITUDE, None] * a, rows[:, LONGITUDE, None] * b, out=out[:, n_inputs:])
    return out


def derived_names(pairs: Sequence[Sequence[int]]) -> list[str]:
    """Readable names, e.g. '2*Latitude - 1*Longitude', for model.json and /model."""
    return [f"{a}*Latitude {'+' if b > 0 else '-'} {abs(b)}*Longitude" for a, b in pairs]
