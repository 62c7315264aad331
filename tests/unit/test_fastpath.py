"""The compiled predict gives scikit-learn's numbers, or steps aside (None) when it cannot."""

from __future__ import annotations

import dataclasses
import io
import os
import threading
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import fetch_california_housing
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from housing_api import _fastpath, coordinates, fastpath
from housing_api.fastpath import compile_predictor
from housing_api.model import Model, load_model

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "sklearn"
TOLERANCE = 1e-9
Matrix = np.ndarray[Any, np.dtype[np.float64]]


def california_X() -> Matrix:
    """The whole dataset from the offline copy beside the repo (SCIKIT_LEARN_DATA, see Makefile)."""
    data_home = os.environ.get("SCIKIT_LEARN_DATA", str(ROOT.parent / "shared/data/sklearn"))
    if not (Path(data_home) / "cal_housing_py3.pkz").is_file():
        pytest.skip(f"offline California housing data not found at {data_home} (see README, The model)")
    X, _ = fetch_california_housing(data_home=data_home, download_if_missing=False, return_X_y=True)
    return np.asarray(X, dtype=np.float64)


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model(ROOT / "model/model.joblib")


def committed_forest(model: Model) -> fastpath.Forest:
    """The tables train writes for the committed model (a Pipeline: derived columns, then the trees)."""
    exported = fastpath.export_forest(model.estimator)
    assert exported is not None
    return exported[0]


def random_regression(seed: int, n: int = 3000, n_features: int = 5) -> tuple[Matrix, Matrix]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)) * [1, 10, 100, 0.01, 1e4][:n_features]
    y = np.sin(X[:, 0]) + 0.01 * X[:, 1] + rng.normal(scale=0.1, size=n)
    X[rng.random(X.shape) < 0.05] = np.nan  # so the trees learn where missing values go
    return X, y


def awkward_rows(X: Matrix, seed: int) -> Matrix:
    """Rows beyond the training range, on thresholds exactly, NaN and infinities."""
    rng = np.random.default_rng(seed)
    rows = np.concatenate([X, X * 3, -X, np.round(X, 1)])
    holes = rng.random(rows.shape)
    rows[holes < 0.05] = np.nan
    rows[(holes >= 0.05) & (holes < 0.07)] = np.inf
    rows[(holes >= 0.07) & (holes < 0.09)] = -np.inf
    return rows


def assert_same(actual: Matrix, expected: Matrix) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == np.float64
    assert np.max(np.abs(actual - expected), initial=0.0) <= TOLERANCE


@pytest.mark.slow
def test_committed_model_matches_sklearn_on_the_whole_dataset(model: Model) -> None:
    X = california_X()
    assert X.shape == (20640, 8)
    assert model.fast_path
    assert np.array_equal(model.predict(X), model.estimator.predict(X))  # the same bits


@pytest.mark.skipif(
    not (DATA / "cal_housing_py3.pkz").is_file(), reason=f"offline California housing data not found at {DATA}"
)
@pytest.mark.slow
def test_committed_forest_file_matches_sklearn_on_the_whole_dataset() -> None:
    X, _ = fetch_california_housing(data_home=str(DATA), download_if_missing=False, return_X_y=True)
    predict = fastpath.load_predictor((ROOT / "model/model.forest.npz").read_bytes())
    assert predict is not None
    estimator = joblib.load(ROOT / "model/model.joblib")
    assert np.array_equal(predict(X), estimator.predict(X))


def round_trip(estimator: object) -> fastpath.Predict:
    """export_forest, save_forest, then load_predictor: what the service does with train's file."""
    exported = fastpath.export_forest(estimator)
    assert exported is not None
    file = io.BytesIO()
    fastpath.save_forest(*exported, file)
    predict = fastpath.load_predictor(file.getvalue())
    assert predict is not None
    return predict


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["squared_error", "absolute_error", "poisson", "gamma"])
def test_forest_file_predicts_like_sklearn_for_each_regression_loss(loss: str) -> None:
    X, y = random_regression(seed=0)
    estimator = HistGradientBoostingRegressor(max_iter=40, loss=loss, random_state=0).fit(X, np.exp(y))
    rows = awkward_rows(random_regression(seed=1)[0], seed=2)
    assert_same(round_trip(estimator)(rows), estimator.predict(rows))


def test_uncovered_estimators_have_no_forest_to_export() -> None:
    X, y = np.arange(20.0).reshape(10, 2), np.arange(10.0)
    assert fastpath.export_forest(LinearRegression().fit(X, y)) is None
    assert fastpath.export_forest(HistGradientBoostingRegressor()) is None


def test_forest_file_with_a_table_of_the_wrong_dtype_is_refused(model: Model) -> None:
    forest = committed_forest(model)
    file = io.BytesIO()
    fastpath.save_forest(dataclasses.replace(forest, masks=forest.masks.astype(np.int64)), "identity", file)
    with pytest.raises(ValueError, match="masks"):
        fastpath.load_predictor(file.getvalue())


def test_forest_file_with_an_unknown_inverse_link_is_refused(model: Model) -> None:
    file = io.BytesIO()
    fastpath.save_forest(committed_forest(model), "logit", file)
    with pytest.raises(ValueError, match="inverse link"):
        fastpath.load_predictor(file.getvalue())


@pytest.mark.slow
def test_committed_model_matches_sklearn_on_nan_and_infinite_values(model: Model) -> None:
    X = awkward_rows(california_X()[::20], seed=1)
    assert_same(model.predict(X), model.estimator.predict(X))


@pytest.mark.parametrize(
    "params",
    [
        {"max_iter": 60},
        {"max_iter": 30, "max_leaf_nodes": 3, "learning_rate": 0.3},
        {"max_iter": 40, "max_depth": 3, "l2_regularization": 1.0},
        {"max_iter": 40, "loss": "poisson"},  # predict() applies exp() to the raw sums
    ],
)
@pytest.mark.slow
def test_model_fitted_here_matches_sklearn(params: dict[str, Any]) -> None:
    X, y = random_regression(seed=0)
    if params.get("loss") == "poisson":
        y = np.exp(y)
    estimator = HistGradientBoostingRegressor(random_state=0, **params).fit(X, y)
    predict = compile_predictor(estimator)
    assert predict is not None
    rows = awkward_rows(random_regression(seed=1)[0], seed=2)
    assert_same(predict(rows), estimator.predict(rows))


def test_trees_that_never_split_predict_their_single_leaf() -> None:
    X = random_regression(seed=0)[0]
    estimator = HistGradientBoostingRegressor(max_iter=5).fit(X, np.full(len(X), 2.5))
    assert all(p.get_n_leaf_nodes() == 1 for (p,) in estimator._predictors)
    predict = compile_predictor(estimator)
    assert predict is not None
    assert_same(predict(X), estimator.predict(X))


def test_one_row_matches_sklearn(model: Model) -> None:
    row = california_X()[:1]
    assert_same(model.predict(row), model.estimator.predict(row))


def test_empty_input_gives_empty_output(model: Model) -> None:
    # scikit-learn raises on zero rows; the fast path answers an empty batch with no predictions.
    out = model.predict(np.empty((0, 8)))
    assert out.shape == (0,)
    assert out.dtype == np.float64


def test_non_contiguous_input_is_copied_not_misread(model: Model) -> None:
    X = california_X()[:50]
    assert_same(model.predict(np.asfortranarray(X)), model.estimator.predict(X))
    assert_same(model.predict(X[::-1]), model.estimator.predict(X[::-1]))


@pytest.mark.parametrize("shape", [(8,), (3, 7), (3, 9), (2, 4, 8)])
def test_wrong_shape_is_a_value_error(model: Model, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        model.predict(np.zeros(shape))


def test_linear_regression_is_not_covered() -> None:
    X, y = np.arange(20.0).reshape(10, 2), np.arange(10.0)
    estimator = LinearRegression().fit(X, y)
    assert compile_predictor(estimator) is None


def test_model_falls_back_to_estimator_predict(model: Model) -> None:
    X, y = np.arange(20.0).reshape(10, 2), np.arange(10.0)
    estimator = LinearRegression().fit(X, y)
    fallback = Model.from_estimator(estimator, model.info)
    assert not fallback.fast_path
    assert_same(fallback.predict(X), estimator.predict(X))


def test_categorical_features_are_not_covered() -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 5, 500), rng.normal(size=500)]).astype(np.float64)
    y = X[:, 0] + X[:, 1]
    estimator = HistGradientBoostingRegressor(categorical_features=[0], max_iter=10).fit(X, y)
    assert compile_predictor(estimator) is None


@pytest.mark.slow
def test_trees_with_more_leaves_than_mask_bits_are_not_covered() -> None:
    X, y = random_regression(seed=0)
    estimator = HistGradientBoostingRegressor(max_leaf_nodes=64, max_iter=5).fit(X, y)
    assert max(p.get_n_leaf_nodes() for (p,) in estimator._predictors) > fastpath.MAX_LEAVES
    assert compile_predictor(estimator) is None


def test_unfitted_estimator_is_not_covered() -> None:
    assert compile_predictor(HistGradientBoostingRegressor()) is None


def test_missing_extension_means_no_fast_path(model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "_fastpath", None)
    assert compile_predictor(model.estimator) is None


def test_two_threads_predicting_at_once_get_the_same_results(model: Model) -> None:
    X = california_X()
    batches = [np.ascontiguousarray(X[i::7][:1000]) for i in range(7)]
    expected = [model.predict(b) for b in batches]
    failures: list[int] = []

    def worker(offset: int) -> None:
        for round_ in range(30):
            i = (round_ + offset) % len(batches)
            if not np.array_equal(model.predict(batches[i]), expected[i]):
                failures.append(i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_kernel_rejects_tables_of_the_wrong_size(model: Model) -> None:
    forest = committed_forest(model)
    tables = (forest.thresholds, forest.offsets, forest.masks, forest.leaves)
    X, out = np.zeros((2, forest.n_features)), np.empty(2)  # the kernel reads the derived columns too
    with pytest.raises(ValueError):
        _fastpath.predict(*tables[:2], forest.masks[:-1], forest.leaves, 0.0, X, out)
    with pytest.raises(ValueError):
        _fastpath.predict(forest.thresholds[:-1], *tables[1:], 0.0, X, out)
    with pytest.raises(ValueError):
        _fastpath.predict(*tables, 0.0, X, np.empty(3))


# -- derived coordinate columns (coordinates.py) and the forest file's formats -----------------
def extreme_rows() -> Matrix:
    """Latitude and longitude at their bounds, subnormal, tiny and signed zero, in every pairing,
    with the other features from real rows."""
    tiny = np.finfo(np.float64).smallest_subnormal
    values = [90.0, -90.0, 180.0, -180.0, 0.0, -0.0, tiny, -tiny, 1e-310, 2.2250738585072014e-308,
              37.88, -122.23, 89.99999999999999, -179.99999999999997]  # fmt: skip
    lat, lon = (m.ravel() for m in np.meshgrid(values, values))
    rows = np.repeat(california_X()[:4], -(-len(lat) // 4), axis=0)[: len(lat)].copy()
    rows[:, 6], rows[:, 7] = lat, lon
    return rows


def test_committed_model_computes_the_derived_columns_itself(model: Model) -> None:
    forest = committed_forest(model)
    assert forest.derived == coordinates.PAIRS
    assert forest.n_inputs == 8 and forest.n_features == 8 + len(coordinates.PAIRS)
    assert model.info.raw["derived_features"] == coordinates.derived_names(coordinates.PAIRS)


@pytest.mark.slow
def test_committed_model_matches_sklearn_on_extreme_coordinates(model: Model) -> None:
    X = extreme_rows()
    assert np.array_equal(model.predict(X), model.estimator.predict(X))


def test_derived_columns_are_one_correctly_rounded_addition() -> None:
    """Each column equals the exact a*lat + b*lon rounded once (Fraction arithmetic, then float()):
    no intermediate rounding, no fused multiply-add, whatever numpy was built with."""
    X = np.concatenate([extreme_rows(), california_X()[::50]])
    derived = coordinates.append_derived(X)
    assert np.array_equal(derived[:, :8], X)
    for k, (a, b) in enumerate(coordinates.PAIRS):
        exact = [float(a * Fraction(lat) + b * Fraction(lon)) for lat, lon in X[:, 6:8].tolist()]
        assert np.array_equal(derived[:, 8 + k], exact), (a, b)


@pytest.mark.slow
@pytest.mark.parametrize("pairs", [((1, 1),), ((2, -1), (-1, 2))])
def test_a_pipeline_with_other_pairs_matches_sklearn(pairs: tuple[tuple[int, int], ...]) -> None:
    X = np.concatenate([california_X()[::10], extreme_rows()])
    y = np.sin(X[:, 6] + X[:, 7]) + X[:, 0]
    estimator = pipeline(pairs).fit(X, y)
    for predict in (compile_predictor(estimator), round_trip(estimator)):
        assert predict is not None
        assert np.array_equal(predict(X), estimator.predict(X))
        assert np.array_equal(predict(awkward_rows(X[:300], seed=3)), estimator.predict(awkward_rows(X[:300], seed=3)))


def pipeline(pairs: object = coordinates.PAIRS, *, func: Any = None, validate: bool = False) -> Pipeline:
    derive = FunctionTransformer(func or coordinates.append_derived, kw_args={"pairs": pairs}, validate=validate)
    return Pipeline([("coordinates", derive), ("regressor", HistGradientBoostingRegressor(max_iter=5))])


def other_function(X: Matrix, pairs: object) -> Matrix:
    return coordinates.append_derived(X, ((1, 1),))


@pytest.mark.parametrize(
    "estimator",
    [pipeline(validate=True), pipeline(((1, 1),), func=other_function), pipeline(((3, 1),))],
    ids=["validate", "another-function", "inexact-coefficient"],
)
@pytest.mark.slow
def test_pipelines_the_fast_path_does_not_follow_are_not_covered(estimator: Pipeline) -> None:
    X = california_X()[::20]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # validate=True warns about its own copy
        estimator.fit(X, X[:, 0])
    assert compile_predictor(estimator) is None
    assert fastpath.export_forest(estimator) is None


def format_1_file(forest: fastpath.Forest, inverse_link: str) -> bytes:
    """A forest file as the service wrote it before derived columns (FOREST_FORMAT 1)."""
    file = io.BytesIO()
    np.savez_compressed(
        file, format=np.int64(1), inverse_link=np.str_(inverse_link), baseline=np.float64(forest.baseline),
        n_features=np.int64(forest.n_features), thresholds=forest.thresholds, offsets=forest.offsets,
        masks=forest.masks, leaves=forest.leaves,
    )  # fmt: skip
    return file.getvalue()


@pytest.mark.slow
def test_a_format_1_forest_file_still_loads_and_predicts() -> None:
    X = california_X()
    estimator = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X[::4], X[::4, 0])
    exported = fastpath.export_forest(estimator)
    assert exported is not None and exported[0].derived == ()
    predict = fastpath.load_predictor(format_1_file(*exported))
    assert predict is not None
    assert np.array_equal(predict(X), estimator.predict(X))


def test_derived_pairs_with_inexact_coefficients_or_the_wrong_width_are_refused(model: Model) -> None:
    forest = committed_forest(model)
    for bad in (dataclasses.replace(forest, derived=((3, 1), *forest.derived[1:])),
                dataclasses.replace(forest, derived=forest.derived[1:])):  # fmt: skip
        file = io.BytesIO()
        fastpath.save_forest(bad, "identity", file)
        with pytest.raises(ValueError, match=r"derived pair|columns for"):
            fastpath.load_predictor(file.getvalue())
