"""Write the PrometheusRule of the prometheus-operator component from prometheus/alerts.yaml.

The rule file is the source: Prometheus without the operator reads it as it is, and the operator
gets the same groups as the PrometheusRule's spec (kustomize cannot wrap a file's content in an
object, hence this step). `make prometheus-rule` runs it; tests/deployment/test_k8s_manifests.py fails when the
rendered PrometheusRule and the rule file differ.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "prometheus" / "alerts.yaml"
OUT = ROOT / ".k8s" / "components" / "prometheus-operator" / "prometheusrule.yaml"
HEADER = """\
# GENERATED from prometheus/alerts.yaml by `make prometheus-rule`: edit that file, not this one.
# The same groups as the plain rule file, for a Prometheus run by the Prometheus Operator.
"""
# The label the operator's Prometheus selects rules by (release: kube-prometheus-stack) is not here:
# the component's release-label.yaml sets it on the PodMonitors and this rule alike, in one place.
LABELS = {
    "app.kubernetes.io/name": "housing-api",
    "app.kubernetes.io/instance": "housing-api",
    "app.kubernetes.io/component": "monitoring",
    "app.kubernetes.io/version": "0.1.0",
}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL) as literal blocks, as they are written in the rule file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rule(rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "housing-api", "labels": LABELS},
        "spec": rules,
    }


def render(rules_path: Path = RULES) -> str:
    rule = prometheus_rule(yaml.safe_load(rules_path.read_text()))
    return HEADER + yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.write_text(render())
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
