"""Flagger's canary analysis, as Flagger runs it, on the rendered prod manifests and a real Prometheus
(flagger.py has what Flagger generates, and the query substitution this module uses).

What Flagger does with a `Canary`'s `analysis.metrics` entry that names a `MetricTemplate`
(docs.flagger.app, "Metrics Analysis"): it substitutes the template's variables (`{{ namespace }}`,
`{{ target }}` = canary.spec.targetRef.name, `{{ interval }}` = the metric's own `interval`, 1m when
left out, `{{ variables.<key> }}` = the metric's `templateVariables`), runs the query as one instant
query and reads one float. An empty result or NaN is "no values found", a failed check; so is a
value outside the metric's `thresholdRange` (min and max inclusive). Each interval with a failed
check counts towards the analysis's `threshold`, and reaching it rolls the canary back; a canary
whose checks all pass at every step is promoted. The faults here are constant, so one evaluation
after the load stands for every interval of the analysis.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from housing_api_testing.flagger import canaries, metric_query

DEFAULT_INTERVAL = "1m"
"""A metric's `interval` when the Canary leaves it out (Flagger's default)."""


def render_prod(kubectl: str, root: Path) -> list[dict[str, Any]]:
    """Every object of `kubectl kustomize .k8s/overlays/prod`."""
    done = subprocess.run([kubectl, "kustomize", str(root / ".k8s" / "overlays" / "prod")],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@dataclass(frozen=True)
class Check:
    """One metric of the analysis, evaluated."""

    name: str
    query: str
    value: float | None
    """None: no values found (an empty result, or NaN)."""
    minimum: float | None
    maximum: float | None

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return (self.minimum is None or self.value >= self.minimum) and (
            self.maximum is None or self.value <= self.maximum
        )

    def describe(self) -> str:
        bounds = " and ".join(
            f"{op} {bound:g}" for op, bound in ((">=", self.minimum), ("<=", self.maximum)) if bound is not None
        )
        shown = "no values found" if self.value is None else f"{self.value:.6g}"
        return f"{self.name:<18} {shown:>16}  must be {bounds:<12} {'ok' if self.passed else 'FAILED'}"


def single_value(result: list[dict[str, Any]]) -> float | None:
    """An instant query's one number, as Flagger's Prometheus provider reads it; no values -> None."""
    if len(result) > 1:
        raise ValueError(f"the query returned {len(result)} series; Flagger expects one number")
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def analysis(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The one Canary and the MetricTemplates by name, from rendered objects."""
    found = canaries(objects)
    if len(found) != 1:
        raise ValueError(f"expected one Canary in the rendered manifests, found {len(found)}")
    templates = {o["metadata"]["name"]: o for o in objects if o["kind"] == "MetricTemplate"}
    return found[0], templates


def checks(
    objects: list[dict[str, Any]], namespace: str, target: str, query: Callable[[str], list[dict[str, Any]]]
) -> Iterator[Check]:
    """Every templated metric of the Canary, run through `query` (an instant query). `target`
    replaces the targetRef's name: each simulated canary is a target of its own here."""
    canary, templates = analysis(objects)
    for metric in canary["spec"]["analysis"]["metrics"]:
        if "templateRef" not in metric:
            continue  # Flagger's built-ins read Istio's metrics: no mesh here
        template = templates[metric["templateRef"]["name"]]
        variables = {k: str(v) for k, v in metric.get("templateVariables", {}).items()}
        text = metric_query(template, namespace, target, metric.get("interval", DEFAULT_INTERVAL), variables)
        bounds = metric.get("thresholdRange", {})
        yield Check(metric["name"], text, single_value(query(text)), bounds.get("min"), bounds.get("max"))


def decision(results: list[Check]) -> str:
    return "promote" if results and all(c.passed for c in results) else "rollback"
