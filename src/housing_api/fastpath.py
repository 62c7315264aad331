"""A fast predict for a fitted HistGradientBoostingRegressor, bit-identical to scikit-learn's.

scikit-learn's predict validates its input and opens one OpenMP region per tree on every call
(~5 ms for one row with 400 trees) and then walks each tree through unpredictable branches.
compile_predictor flattens the forest once into QuickScorer tables (how they work: _fastpath.c)
and returns a predict that runs the native kernel with the GIL released, so a worker thread running
inference leaves the event loop free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard, TypeVar

import numpy as np

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingRegressor

try:
    from housing_api import _fastpath
except ImportError:  # installed without a C compiler: every caller falls back to scikit-learn
    _fastpath = None  # type: ignore[assignment]

__all__ = ["Predict", "compile_predictor"]

Matrix = np.ndarray[Any, np.dtype[np.float64]]
Predict = Callable[[Matrix], Matrix]
Nodes = np.ndarray[Any, np.dtype[np.void]]
S = TypeVar("S", bound=np.generic)

LEAF_SLOTS = 32
"""Mask bits per tree in the kernel; bit 31 is a sentinel, so a tree may have at most 31 leaves."""
MAX_LEAVES = LEAF_SLOTS - 1
ALL_LEAVES = 0xFFFFFFFF

SPLIT = np.dtype(
    [("tree", np.intp), ("feature", np.intp), ("threshold", np.float64),
     ("missing_go_to_left", np.bool_), ("mask", np.uint32)]
)  # fmt: skip
"""One internal node; mask has the bits of its left subtree's leaves cleared."""


@dataclass(frozen=True)
class Forest:
    """The kernel's read-only tables (layout: _fastpath.c)."""

    thresholds: np.ndarray[Any, np.dtype[np.float64]]
    offsets: np.ndarray[Any, np.dtype[np.int64]]
    masks: np.ndarray[Any, np.dtype[np.uint32]]
    leaves: np.ndarray[Any, np.dtype[np.float64]]
    baseline: float
    n_features: int


def compile_predictor(estimator: object) -> Predict | None:
    """A fast predict for estimators we cover (HistGradientBoostingRegressor without categorical
    features); None otherwise, so the caller falls back to estimator.predict.

    The predict works on a copy of the fitted trees: refitting the estimator needs a new compile.
    """
    if _fastpath is None or not is_covered(estimator):
        return None
    # predict() maps raw sums through the loss's inverse link (identity for squared error).
    inverse_link: Callable[[Matrix], Any] = estimator._loss.link.inverse
    return bind(flatten(estimator), inverse_link)


def is_covered(estimator: object) -> TypeGuard[HistGradientBoostingRegressor]:
    """A fitted HGBR regressor with numeric splits only and trees that fit the kernel's masks."""
    # Imported here so that importing housing_api.model stays as light as it was; unpickling
    # the model imports sklearn.ensemble anyway.
    from sklearn.ensemble import HistGradientBoostingRegressor

    # The exact type: a subclass may override predict, which the tables would not follow.
    if type(estimator) is not HistGradientBoostingRegressor:
        return False
    hgbr: Any = estimator  # scikit-learn has no type hints to narrow to
    if getattr(hgbr, "_predictors", None) is None:  # not fitted: let predict() say so
        return False
    # Categorical features go through a preprocessor that encodes and reorders the columns.
    if hgbr._preprocessor is not None or hgbr.n_trees_per_iteration_ != 1:
        return False
    n_features = int(hgbr.n_features_in_)
    return all(is_simple_tree(p.nodes, n_features) for (p,) in hgbr._predictors)


def is_simple_tree(nodes: Nodes, n_features: int) -> bool:
    split = nodes["is_leaf"] == 0
    features = nodes["feature_idx"][split]
    return (
        not nodes["is_categorical"][split].any()
        and int((~split).sum()) <= MAX_LEAVES
        and bool(((features >= 0) & (features < n_features)).all())
    )


def flatten(estimator: HistGradientBoostingRegressor) -> Forest:
    trees: list[Nodes] = [p.nodes for (p,) in estimator._predictors]
    orders = [leaf_order(nodes) for nodes in trees]
    n_features = int(estimator.n_features_in_)
    splits = np.concatenate([tree_splits(t, nodes, orders[t]) for t, nodes in enumerate(trees)])
    tables = [feature_table(splits[splits["feature"] == f], len(trees)) for f in range(n_features)]
    thresholds = np.concatenate([np.empty(0), *(t for t, _ in tables)])
    offsets = np.concatenate([[0], np.cumsum([len(t) for t, _ in tables])]).astype(np.int64)
    masks = np.concatenate([m for _, m in tables])
    leaves = np.stack([leaf_values(t, o) for t, o in zip(trees, orders, strict=True)])
    return Forest(
        thresholds=read_only(thresholds),
        offsets=read_only(offsets),
        masks=read_only(masks),
        leaves=read_only(leaves),
        baseline=float(np.ravel(estimator._baseline_prediction)[0]),
        n_features=n_features,
    )


def read_only(array: np.ndarray[Any, np.dtype[S]]) -> np.ndarray[Any, np.dtype[S]]:
    """A C-contiguous copy nobody can write to: the kernel reads it from many threads at once."""
    copy = np.array(array, order="C", copy=True)
    copy.flags.writeable = False
    return copy


class LeafOrder(NamedTuple):
    """A tree's leaves from left to right, and for each node the leaf numbers below it."""

    leaves: list[int]
    first: list[int]
    last: list[int]


def leaf_order(nodes: Nodes) -> LeafOrder:
    is_leaf, left, right = (nodes[k].tolist() for k in ("is_leaf", "left", "right"))
    first, last, order = [0] * len(nodes), [0] * len(nodes), list[int]()

    def visit(i: int) -> None:
        if is_leaf[i]:
            first[i] = last[i] = len(order)
            order.append(i)
            return
        visit(left[i])
        visit(right[i])
        first[i], last[i] = first[left[i]], last[right[i]]

    visit(0)
    return LeafOrder(order, first, last)


def leaf_values(nodes: Nodes, order: LeafOrder) -> np.ndarray[Any, np.dtype[np.float64]]:
    # Unused slots, the sentinel's among them, hold NaN: a table bug shows instead of hiding.
    values = np.full(LEAF_SLOTS, np.nan)
    values[: len(order.leaves)] = nodes["value"][order.leaves]
    return values


def tree_splits(tree: int, nodes: Nodes, order: LeafOrder) -> np.ndarray[Any, np.dtype[np.void]]:
    """The internal nodes of one tree, each with the mask of its left subtree's leaves cleared."""
    internal = np.flatnonzero(nodes["is_leaf"] == 0)
    splits = np.empty(len(internal), dtype=SPLIT)
    splits["tree"] = tree
    splits["feature"] = nodes["feature_idx"][internal]
    splits["threshold"] = nodes["num_threshold"][internal]
    splits["missing_go_to_left"] = nodes["missing_go_to_left"][internal] != 0
    lefts = nodes["left"][internal].tolist()
    splits["mask"] = [without_leaves(order.first[j], order.last[j]) for j in lefts]
    return splits


def without_leaves(first: int, last: int) -> int:
    return ALL_LEAVES & ~(((1 << (last - first + 1)) - 1) << first)


def feature_table(
    splits: np.ndarray[Any, np.dtype[np.void]], n_trees: int
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.uint32]]]:
    """One feature's sorted thresholds and its mask rows: row c for a value above exactly c
    thresholds, and a last row for NaN."""
    thresholds = np.unique(splits["threshold"])
    table = np.full((len(thresholds) + 2, n_trees), ALL_LEAVES, dtype=np.uint32)
    # A value goes right at the split with the k-th smallest threshold once it is above k of them.
    above = np.searchsorted(thresholds, splits["threshold"]) + 1
    np.bitwise_and.at(table, (above, splits["tree"]), splits["mask"])
    table[:-1] = np.bitwise_and.accumulate(table[:-1], axis=0)
    # NaN follows each split's missing_go_to_left flag instead of a comparison.
    right = splits[~splits["missing_go_to_left"]]
    np.bitwise_and.at(table[-1], right["tree"], right["mask"])
    return thresholds, table


def bind(forest: Forest, inverse_link: Callable[[Matrix], Any]) -> Predict:
    """predict(X) for an (n, n_features) matrix; safe to call from several threads at once."""
    kernel = _fastpath.predict

    def predict(X: Matrix) -> Matrix:
        rows = np.ascontiguousarray(X, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != forest.n_features:
            raise ValueError(f"X has shape {rows.shape}; expected (n, {forest.n_features})")
        raw = np.empty(rows.shape[0], dtype=np.float64)
        kernel(forest.thresholds, forest.offsets, forest.masks, forest.leaves,
               forest.baseline, rows, raw)  # fmt: skip
        return np.asarray(inverse_link(raw), dtype=np.float64)

    return predict
