"""A model that counts the rows of each call (and can be slow), and distinct rows to send it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from housing_api.schemas import SAMPLE_BATCH

GOOD = SAMPLE_BATCH[0]


def rows(n: int, start: float = 1.0) -> list[dict[str, float]]:
    return [{**GOOD, "MedInc": start + i / 997} for i in range(n)]


class ModelSpy:
    """Wraps Model.predict to record how many rows each model call received. With a delay it stands
    in for a slow model; such tests set INLINE_PREDICT_ROWS=0 so every call runs in the inference
    thread, as a slow model's would."""

    def __init__(self, model: Any, delay_s: float = 0.0) -> None:
        self.calls: list[int] = []
        self._predict = model.predict
        self.delay_s = delay_s
        model.predict = self

    def __call__(self, X: np.ndarray) -> np.ndarray:
        self.calls.append(len(X))
        if self.delay_s:
            time.sleep(self.delay_s)
        return self._predict(X)  # type: ignore[no-any-return]
