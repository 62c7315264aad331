"""The alert rules file (prometheus/alerts.yaml) as data: its alerts and its recording rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

RULES = Path(__file__).resolve().parents[2] / "prometheus" / "alerts.yaml"
Rule = dict[str, Any]


def load_rules(path: Path = RULES) -> list[Rule]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alerts() -> list[Rule]:
    return [r for r in load_rules() if "alert" in r]


def recorded() -> dict[str, str]:
    return {r["record"]: r["expr"] for r in load_rules() if "record" in r}
