"""`housing-api serve` with a fault in a share of POST /predict answers (fault injection for the
rollout test's bad canaries, as faulty_serve.py does for hung work), chosen by ROLLOUT_FAULT:
`errors` raises in the route (a 500, as an unhandled bug gives), `slow` waits SLOW_S first (as a
slower model would). Everything else is the real service."""

from __future__ import annotations

import asyncio
import os
import random
import sys

from housing_api import cli
from housing_api.service import PredictionService

SHARE = 0.05
"""Of the answers: five times the 1 % a p99 may ignore, fifty times the 0.1 % 5xx SLO."""
SLOW_S = 0.25
_predict_body = PredictionService.predict_body
_draw = random.Random(25)


async def _faulty_predict_body(self: PredictionService, body: bytes) -> object:
    if _draw.random() < SHARE:
        if os.environ["ROLLOUT_FAULT"] == "errors":
            raise RuntimeError("injected fault: this canary fails a share of its requests")
        await asyncio.sleep(SLOW_S)
    return await _predict_body(self, body)


if __name__ == "__main__":
    PredictionService.predict_body = _faulty_predict_body  # type: ignore[assignment]
    sys.exit(cli.main(sys.argv[1:]))
