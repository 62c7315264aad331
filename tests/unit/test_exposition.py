"""exposition.py: every sample of the service's own families on /metrics names the model version that
served it, and only those."""

from __future__ import annotations

from pathlib import Path

from conftest import MODEL_PATH, app_client, other_model
from prometheus_client.parser import text_string_to_metric_families

from housing_api.schemas import SAMPLE_BATCH


def test_every_service_sample_names_the_model_version_that_served_it(tmp_path: Path) -> None:
    # Two apps with different models in one process: each page carries its own version only.
    other, _ = other_model(tmp_path)
    for model_path in (MODEL_PATH, other):
        with app_client(model_path=model_path) as c:
            version = c.get("/model").json()["version"]
            c.post("/predict", json=SAMPLE_BATCH)
            samples = [s for f in text_string_to_metric_families(c.get("/metrics").text) for s in f.samples]
        service = [s for s in samples if s.name.startswith(("http_", "housing_api_"))]
        assert service and {s.labels.get("model_version") for s in service} == {version[:12]}
        assert not [
            s for s in samples if not s.name.startswith(("http_", "housing_api_")) and "model_version" in s.labels
        ]
