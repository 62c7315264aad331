"""The request deadline is stated once (config.py); the manifests and docs that restate it agree."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

from housing_api.config import REQUEST_TIMEOUT_S_DEFAULT, Settings
from housing_api.metrics import LATENCY_BUCKETS

# The ways a manifest or a doc states the deadline: `REQUEST_TIMEOUT_S=5` (the ConfigMap),
# "| `REQUEST_TIMEOUT_S` | `5` |" (the README's settings table) and "(REQUEST_TIMEOUT_S, 5 s" (prose).
STATED = re.compile(r"REQUEST_TIMEOUT_S(?:=|` \| `|`?, )(\d+(?:\.\d+)?)")
PLACES = (
    "README.md",
    "docs/deployment.md",
    ".k8s/base/kustomization.yaml",
    ".k8s/overlays/prod/istio-virtualservice.yaml",
)


def stated_deadlines(text: str) -> list[float]:
    return [float(value) for value in STATED.findall(text)]


def test_the_settings_default_is_the_declared_deadline() -> None:
    assert Settings.model_fields["request_timeout_s"].default == REQUEST_TIMEOUT_S_DEFAULT
    assert LATENCY_BUCKETS[-1] == REQUEST_TIMEOUT_S_DEFAULT  # a p99 at the deadline reads as such


@pytest.mark.parametrize("place", PLACES)
def test_every_manifest_and_doc_that_states_the_deadline_states_the_default(place: str) -> None:
    stated = stated_deadlines((ROOT / place).read_text())
    assert stated, f"{place} no longer states REQUEST_TIMEOUT_S: drop it from PLACES or fix the pattern"
    assert set(stated) == {REQUEST_TIMEOUT_S_DEFAULT}, (
        f"{place} states {stated}, config.py {REQUEST_TIMEOUT_S_DEFAULT:g}"
    )


@pytest.mark.parametrize(
    "text",
    [
        "- REQUEST_TIMEOUT_S=7",
        "| `REQUEST_TIMEOUT_S` | `7` | longest",
        "(`REQUEST_TIMEOUT_S`, 7 s, answered",
        "(REQUEST_TIMEOUT_S, 7 s)",
    ],
)
def test_the_check_sees_a_restated_deadline_that_drifted(text: str) -> None:
    assert stated_deadlines(text) == [7.0] != [REQUEST_TIMEOUT_S_DEFAULT]
