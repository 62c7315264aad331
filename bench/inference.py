"""Micro-benchmark: µs per predict call, scikit-learn vs the compiled fast path, in one process.

    .venv/bin/python bench/inference.py [--model model/model.joblib] [--seconds 1.0]

Each cell is the median of many calls on the same rows (random rows of the California data), so
the two columns share the machine's state; on a shared, noisy machine rerun rather than trust a
single table. Not a test: nothing here asserts a duration.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import fetch_california_housing

from housing_api.fastpath import compile_predictor
from housing_api.model import load_model

ROOT = Path(__file__).resolve().parents[1]
SIZES = (1, 10, 100, 1000)
Matrix = np.ndarray[Any, np.dtype[np.float64]]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def california_X() -> Matrix:
    data_home = os.environ.get("SCIKIT_LEARN_DATA", str(ROOT.parent / "shared/data/sklearn"))
    X, _ = fetch_california_housing(data_home=data_home, download_if_missing=False, return_X_y=True)
    return np.ascontiguousarray(X, dtype=np.float64)


def median_us(call: Callable[[], object], seconds: float) -> float:
    """Median wall time of one call, over as many calls as fit in `seconds` (at least 20)."""
    call()  # warm caches and lazy imports
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < 20 or time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "model/model.joblib")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per cell")
    args = parser.parse_args()

    estimator = load_model(args.model).estimator
    start = time.perf_counter()
    fast = compile_predictor(estimator)
    compile_ms = (time.perf_counter() - start) * 1e3
    if fast is None:
        raise SystemExit("the fast path does not cover this model (or the extension is missing)")
    X = california_X()
    rng = np.random.default_rng(0)

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"CPU: {cpu_model()}, nproc {os.cpu_count()}, Python {platform.python_version()}")
    print(f"load average before the run (1, 5, 15 min): {load}")
    print(f"compile_predictor: {compile_ms:.0f} ms; median µs per call")
    print(f"{'rows':>6} {'sklearn':>10} {'fastpath':>10} {'speedup':>8} {'max|diff|':>10}")
    for n in SIZES:
        rows = np.ascontiguousarray(X[rng.choice(len(X), n, replace=False)])
        diff = float(np.max(np.abs(fast(rows) - estimator.predict(rows))))
        slow_us = median_us(partial(estimator.predict, rows), args.seconds)
        fast_us = median_us(partial(fast, rows), args.seconds)
        print(f"{n:>6} {slow_us:>10.1f} {fast_us:>10.1f} {slow_us / fast_us:>7.0f}x {diff:>10.1e}")


if __name__ == "__main__":
    main()
