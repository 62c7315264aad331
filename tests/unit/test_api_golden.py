"""POST and GET /predict answer the differential corpus byte for byte as main did before the hot path.

The corpus and its replay are in tests/helpers/golden_corpus.py; the answers in tests/golden/predict.json were recorded
from main at 4181359 (issue 26). A difference is a change of the API: either a bug, or a change
made on purpose, in which case the golden file is re-recorded from the reference checkout.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import golden_corpus


@pytest.fixture(scope="module")
def golden() -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = json.loads(golden_corpus.GOLDEN.read_text())
    return answers


@pytest.fixture(scope="module")
def replayed() -> list[dict[str, Any]]:
    return golden_corpus.replay()


def test_the_corpus_is_the_one_recorded(golden: list[dict[str, Any]]) -> None:
    cases = golden_corpus.cases()
    assert [a["name"] for a in golden] == [c.name for c in cases]
    assert [a["request_sha256"] for a in golden] == [golden_corpus._request_digest(c) for c in cases]


def test_every_answer_is_the_recorded_one(golden: list[dict[str, Any]], replayed: list[dict[str, Any]]) -> None:
    assert len(replayed) == len(golden)
    differ = [(g["name"], g, r) for g, r in zip(golden, replayed, strict=True) if g != r]
    shown = "\n".join(
        f"{name}:\n  recorded {json.dumps(g)[:600]}\n  now      {json.dumps(r)[:600]}" for name, g, r in differ[:5]
    )
    assert not differ, f"{len(differ)} of {len(golden)} answers differ, first ones:\n{shown}"


def test_the_corpus_covers_every_kind_of_answer(golden: list[dict[str, Any]]) -> None:
    statuses = {a["status"] for a in golden}
    assert statuses >= {200, 404, 405, 413, 415, 422}
    assert {a["headers"]["x-cache"] for a in golden if a["status"] == 200} == {"HIT", "MISS", "PARTIAL"}
