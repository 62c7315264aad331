"""What GET /metrics serves: the app's registry, with every `http_*` and `housing_api_*` sample
labelled by the model version that served it (`model_version`, the version's first 12 hex
characters), so that a canary and its primary can be told apart by version in any query.

The label is added when /metrics is rendered, not recorded with each observation: a process loads
its model once, in the lifespan, and never swaps it (a new model is a new pod), so the label is a
per-process constant and the request path pays nothing for it. Prometheus' relabelling could add
it too, but only where somebody configured it; here every scraper (Flagger's queries, the rollout
test, curl) sees the same series.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from starlette.responses import Response

MODEL_VERSION: Final = "model_version"
VERSION_HEX = 12
"""A bounded label: 12 hex characters tell versions apart (48 bits), one value per model ever served."""
LABELLED_FAMILIES = ("http_", "housing_api_")
"""The service's own families; process_* and python_* describe the process, not the model."""


def version_label(version: str) -> str:
    """The label value of a model version digest."""
    return version[:VERSION_HEX]


class VersionLabelled(Collector):
    """`registry`'s metrics, each service sample with model_version added (once `version` is set)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.version: str | None = None
        """The label value; None until the lifespan has loaded the model (nothing is served before)."""

    def collect(self) -> Iterator[Metric]:
        version = self.version
        for metric in self.registry.collect():
            if version is not None and metric.name.startswith(LABELLED_FAMILIES):
                # collect() builds new Metric objects on every call: relabelling them changes no state.
                metric.samples = [s._replace(labels={**s.labels, MODEL_VERSION: version}) for s in metric.samples]
            yield metric


def serve_metrics(app: FastAPI, path: str, collector: Collector) -> None:
    """GET `path`: what `collector` collects, in Prometheus' text format (the instrumentator's own
    endpoint would render its registry without the label)."""

    # A plain function, so it runs in the threadpool, as the instrumentator's endpoint did.
    def metrics_page() -> Response:
        return Response(generate_latest(collector), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.add_api_route(path, metrics_page, methods=["GET"], include_in_schema=False)
