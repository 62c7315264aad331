"""`housing-api serve` whose model hangs on rows with MedInc == HANG_MEDINC (fault injection for
tests that need a real process with hung work, such as the shutdown deadline)."""

from __future__ import annotations

import sys
import threading
from typing import Any

from housing_api import cli
from housing_api.model import Model

HANG_MEDINC = 7.77
_predict = Model.predict


def _hanging_predict(self: Model, X: Any) -> Any:
    if (X[:, 0] == HANG_MEDINC).any():
        threading.Event().wait()  # forever: only the process's end stops it
    return _predict(self, X)


if __name__ == "__main__":
    Model.predict = _hanging_predict  # type: ignore[method-assign]
    sys.exit(cli.main(sys.argv[1:]))
