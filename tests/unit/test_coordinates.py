"""coordinates.py: the derived columns a*Latitude + b*Longitude, exact for the allowed coefficients.
(The forest file and the fast path that use them: tests/unit/test_fastpath.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from housing_api import FEATURES
from housing_api.coordinates import PAIRS, append_derived, check_pairs, derived_names
from housing_api.schemas import SAMPLE_BATCH

X = np.array([[row[f] for f in FEATURES] for row in SAMPLE_BATCH], dtype=np.float64)


def test_one_column_per_pair_is_appended_after_the_raw_features() -> None:
    out = append_derived(X, ((1, 1), (2, -1)))
    assert out.shape == (4, 10)
    assert np.array_equal(out[:, :8], X)
    lat, lon = X[:, 6], X[:, 7]
    assert np.array_equal(out[:, 8], lat + lon) and np.array_equal(out[:, 9], 2 * lat - lon)


def test_the_default_pairs_give_six_columns() -> None:
    assert append_derived(X).shape == (4, 8 + len(PAIRS)) and len(PAIRS) == 6


@pytest.mark.parametrize("shape", [(4,), (4, 7), (2, 9)])
def test_a_matrix_of_another_shape_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected \\(n, 8\\)"):
        append_derived(np.zeros(shape))


@pytest.mark.parametrize("pair", [(3, 1), (1, 0), (1, -3)])
def test_a_coefficient_whose_product_may_round_is_refused(pair: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="outside \\[-2, -1, 1, 2\\]"):
        check_pairs([pair])


def test_checked_pairs_come_back_as_int_tuples() -> None:
    assert check_pairs([[1.0, -2.0], (2, 1)]) == ((1, -2), (2, 1))  # type: ignore[list-item]


def test_the_names_read_as_the_formula() -> None:
    assert derived_names([(1, 1), (2, -1)]) == ["1*Latitude + 1*Longitude", "2*Latitude - 1*Longitude"]
