import pytest

from housing_api.keys import batch_digest, cache_keys, canonical_row, key_namespace, row_digest

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


def test_keys_carry_the_value_encoding() -> None:
    row = canonical_row(ROW)
    assert cache_keys(key_namespace("p", "a" * 64, "r1"), [row]) != cache_keys(
        key_namespace("p", "a" * 64, "r2"), [row]
    )
