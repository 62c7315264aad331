"""A model whose rows choose its faults (raise, hang, kill its stage), and an app that runs it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from conftest import make_settings
from fastapi import FastAPI

from housing_api.app import create_app
from housing_api.schemas import SAMPLE_BATCH

ROW = SAMPLE_BATCH[0]


class Boom(BaseException):
    """An exception type nothing expects (not an Exception)."""


class FaultyModel:
    """Wraps Model.predict: a row's MedInc chooses a fault (raise, hang, kill the stage)."""

    RAISE, HANG, KILL = 13.13, 7.77, 6.66

    def __init__(self, model: Any, hang_s: float = 3.0) -> None:
        self._predict = model.predict
        self.hang_s = hang_s
        self.release = threading.Event()
        model.predict = self

    def __call__(self, X: np.ndarray) -> np.ndarray:
        medinc = X[:, 0]
        if (medinc == self.RAISE).any():
            raise RuntimeError("injected model failure")
        if (medinc == self.KILL).any():
            raise Boom()
        if (medinc == self.HANG).any():
            self.release.wait(self.hang_s)
        return self._predict(X)  # type: ignore[no-any-return]


def faulty_app(**overrides: Any) -> tuple[FastAPI, Callable[[], FaultyModel]]:
    app = create_app(make_settings(inline_predict_rows=0, **overrides))
    holder: list[FaultyModel] = []

    def faults() -> FaultyModel:
        if not holder:
            holder.append(FaultyModel(app.state.service.model))
        return holder[0]

    return app, faults


def fresh_rows(n: int, start: float) -> list[dict[str, float]]:
    return [{**ROW, "MedInc": start + i / 1013} for i in range(n)]
