"""A fast predict for a fitted HistGradientBoostingRegressor, bit-identical to scikit-learn's.

scikit-learn's predict validates its input and opens one OpenMP region per tree on every call
(~5 ms for one row with 400 trees) and then walks each tree through unpredictable branches.
compile_predictor flattens the forest once into QuickScorer tables (how they work: _fastpath.c)
and returns a predict that runs the native kernel with the GIL released, so a worker thread running
inference leaves the event loop free.

save_forest writes those tables to an .npz of plain arrays (the forest file beside model.joblib), so
the service can start from them without importing scikit-learn or unpickling anything: load_forest
reads it back with allow_pickle=False.

The estimator may also be the Pipeline `housing-api train` writes: coordinates.append_derived in a
FunctionTransformer, then the regressor. The forest file then records the derived pairs, and predict
computes those columns with the same function before the kernel (format 2; format-1 files have none).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, TypeGuard, TypeVar

import numpy as np

from housing_api import FEATURES
from housing_api.coordinates import PAIRS, Pairs, append_derived, append_with, check_pairs, coefficients

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingRegressor

try:
    from housing_api import _fastpath
except ImportError:  # installed without a C compiler: every caller falls back to scikit-learn
    _fastpath = None  # type: ignore[assignment]

__all__ = [
    "FOREST_FORMAT",
    "READABLE_FORMATS",
    "Forest",
    "Predict",
    "bind",
    "compile_predictor",
    "export_forest",
    "load_forest",
    "load_predictor",
    "save_forest",
]

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

FOREST_FORMAT = 2
"""The layout of the forest file (save_forest); model.json records it as forest_format.
2 added derived_pairs (the coordinate columns computed before the kernel)."""
READABLE_FORMATS = (1, 2)
"""Formats load_forest reads: a format-1 file (no derived columns) from an older registry version
still serves."""


@dataclass(frozen=True)
class Forest:
    """The kernel's read-only tables (layout: _fastpath.c)."""

    thresholds: np.ndarray[Any, np.dtype[np.float64]]
    offsets: np.ndarray[Any, np.dtype[np.int64]]
    masks: np.ndarray[Any, np.dtype[np.uint32]]
    leaves: np.ndarray[Any, np.dtype[np.float64]]
    baseline: float
    n_features: int
    """Columns the kernel reads: the inputs, then one per derived pair."""
    derived: Pairs = ()
    """(a, b) per derived column a*Latitude + b*Longitude (coordinates.py); () for raw inputs only."""

    @property
    def n_inputs(self) -> int:
        """Columns predict() takes."""
        return self.n_features - len(self.derived)


def compile_predictor(estimator: object) -> Predict | None:
    """A fast predict for estimators we cover (HistGradientBoostingRegressor without categorical
    features, alone or after coordinates.append_derived in a Pipeline); None otherwise, so the
    caller falls back to estimator.predict.

    The predict works on a copy of the fitted trees: refitting the estimator needs a new compile.
    """
    covered = unwrap(estimator) if _fastpath is not None else None
    if covered is None:
        return None
    regressor, derived = covered
    # predict() maps raw sums through the loss's inverse link (identity for squared error).
    inverse_link: Callable[[Matrix], Any] = regressor._loss.link.inverse
    return bind(flatten(regressor, derived), inverse_link)


def unwrap(estimator: object) -> tuple[HistGradientBoostingRegressor, Pairs] | None:
    """The covered regressor and the derived pairs computed before it: () for a bare regressor;
    None for anything else."""
    if is_covered(estimator):
        return estimator, ()
    parts = pipeline_parts(estimator)
    if parts is None:
        return None
    derived, regressor = parts
    if not is_covered(regressor) or regressor.n_features_in_ != len(FEATURES) + len(derived):
        return None
    return regressor, derived


def pipeline_parts(estimator: object) -> tuple[Pairs, object] | None:
    """The pairs and the last step when estimator is exactly
    Pipeline[FunctionTransformer(append_derived), regressor] (what train builds); None otherwise.
    Exact types, as in is_covered: a subclass may override transform or predict, which the tables
    would not follow."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    if type(estimator) is not Pipeline:
        return None
    steps: list[tuple[str, Any]] = estimator.steps  # type: ignore[attr-defined]  # the exact type was checked
    if len(steps) != 2:
        return None
    transformer = steps[0][1]
    if type(transformer) is not FunctionTransformer or transformer.func is not append_derived:
        return None
    kw_args = transformer.kw_args or {}
    # validate=True would run check_array first, which the fast path does not.
    if transformer.validate or set(kw_args) - {"pairs"}:
        return None
    try:
        return check_pairs(kw_args.get("pairs", PAIRS)), steps[1][1]  # as transform would call it
    except (TypeError, ValueError):
        return None


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


def flatten(estimator: HistGradientBoostingRegressor, derived: Pairs = ()) -> Forest:
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
        derived=derived,
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
    """predict(X) for an (n, n_inputs) matrix; safe to call from several threads at once."""
    kernel = _fastpath.predict
    a, b = coefficients(forest.derived)

    def predict(X: Matrix) -> Matrix:
        rows = np.ascontiguousarray(X, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != forest.n_inputs:
            raise ValueError(f"X has shape {rows.shape}; expected (n, {forest.n_inputs})")
        if forest.derived:
            # What the Pipeline's FunctionTransformer runs (append_derived calls append_with): the same bits.
            rows = append_with(rows, a, b)
        raw = np.empty(rows.shape[0], dtype=np.float64)
        kernel(forest.thresholds, forest.offsets, forest.masks, forest.leaves,
               forest.baseline, rows, raw)  # fmt: skip
        return np.asarray(inverse_link(raw), dtype=np.float64)

    return predict


def _identity(raw: Matrix) -> Matrix:
    return raw


def _exp(raw: Matrix) -> Matrix:
    return np.exp(raw)


INVERSE_LINKS: dict[str, Callable[[Matrix], Matrix]] = {"identity": _identity, "exp": _exp}
"""The inverse links a forest file may name; each computes exactly what scikit-learn's does."""

# scikit-learn's link classes (sklearn._loss.link) by the name of their inverse. A link missing
# here gets no forest file: the service then unpickles the estimator, which knows its own link.
SKLEARN_LINKS = {"IdentityLink": "identity", "LogLink": "exp"}

TABLES: dict[str, tuple[np.dtype[Any], int]] = {
    "thresholds": (np.dtype(np.float64), 1),
    "offsets": (np.dtype(np.int64), 1),
    "masks": (np.dtype(np.uint32), 2),
    "leaves": (np.dtype(np.float64), 2),
}
"""The forest file's tables: dtype and number of dimensions (the kernel reads raw bytes)."""
SCALARS = ("format", "inverse_link", "baseline", "n_features")
DERIVED = "derived_pairs"
"""Format 2's entry: an int64 (k, 2) array of the derived pairs, (0, 2) when there are none."""


def export_forest(estimator: object) -> tuple[Forest, str] | None:
    """The tables and the inverse link's name for save_forest; None when the fast path does not
    cover the estimator or its link has no name in INVERSE_LINKS."""
    covered = unwrap(estimator)
    if covered is None:
        return None
    regressor, derived = covered
    link = type(regressor._loss.link)
    if link.__module__ != "sklearn._loss.link" or link.__name__ not in SKLEARN_LINKS:
        return None
    return flatten(regressor, derived), SKLEARN_LINKS[link.__name__]


def save_forest(forest: Forest, inverse_link: str, file: BinaryIO) -> None:
    """Plain arrays, no pickled objects; compressed, since most mask words are all ones.

    The layout of np.savez_compressed, but each entry carries a fixed timestamp instead of the
    current time, so the same forest is always the same bytes (and the same forest_sha256).
    """
    arrays: dict[str, Any] = {
        "format": np.int64(FOREST_FORMAT),
        "inverse_link": np.str_(inverse_link),
        "baseline": np.float64(forest.baseline),
        "n_features": np.int64(forest.n_features),
        **{name: getattr(forest, name) for name in TABLES},
        DERIVED: np.array(forest.derived, dtype=np.int64).reshape(-1, 2),
    }
    with zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(entry, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(value), allow_pickle=False)


def load_forest(data: bytes) -> tuple[Forest, str]:
    """The forest and inverse link name save_forest wrote; ValueError for anything else.

    allow_pickle=False: an object array in the file raises instead of running code.
    """
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    check_forest_file(arrays)
    forest = Forest(
        thresholds=read_only(arrays["thresholds"]),
        offsets=read_only(arrays["offsets"]),
        masks=read_only(arrays["masks"]),
        leaves=read_only(arrays["leaves"]),
        baseline=float(arrays["baseline"]),
        n_features=int(arrays["n_features"]),
        derived=check_pairs(arrays[DERIVED].tolist()) if DERIVED in arrays else (),
    )
    return forest, str(arrays["inverse_link"])


def load_predictor(data: bytes) -> Predict | None:
    """predict() from a forest file's bytes; None without the compiled kernel (the caller then
    unpickles the estimator). ValueError for a file save_forest did not write."""
    if _fastpath is None:
        return None
    forest, inverse_link = load_forest(data)
    return bind(forest, INVERSE_LINKS[inverse_link])


def check_forest_file(arrays: dict[str, np.ndarray[Any, Any]]) -> None:
    """The entries, format, link and table dtypes save_forest writes; the kernel checks sizes."""
    if "format" not in arrays or arrays["format"].shape != () or int(arrays["format"]) not in READABLE_FORMATS:
        raise ValueError(f"forest file has format {arrays.get('format')}; this service reads {READABLE_FORMATS}")
    expected = sorted([*TABLES, *SCALARS] + ([DERIVED] if int(arrays["format"]) >= 2 else []))
    if sorted(arrays) != expected:
        raise ValueError(f"forest file has entries {sorted(arrays)}; expected {expected}")
    if str(arrays["inverse_link"]) not in INVERSE_LINKS:
        raise ValueError(f"forest file names inverse link {arrays['inverse_link']}; known: {sorted(INVERSE_LINKS)}")
    for name, (dtype, ndim) in TABLES.items():
        if arrays[name].dtype != dtype or arrays[name].ndim != ndim:
            raise ValueError(f"forest table {name} is {arrays[name].dtype} with {arrays[name].ndim} dimensions")
    if DERIVED in arrays:
        check_derived(arrays[DERIVED], int(arrays["n_features"]))


def check_derived(pairs: np.ndarray[Any, Any], n_features: int) -> None:
    """(k, 2) int64 pairs with exact coefficients, after exactly the service's inputs."""
    if pairs.dtype != np.int64 or pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"forest file's {DERIVED} is {pairs.dtype} of shape {pairs.shape}; expected int64 (k, 2)")
    check_pairs(pairs.tolist())
    if len(pairs) and n_features != len(FEATURES) + len(pairs):
        raise ValueError(
            f"forest file has {n_features} columns for {len(pairs)} derived pairs; expected {len(FEATURES)} inputs"
        )
