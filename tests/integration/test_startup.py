"""Start-up from the forest file: the service serves without importing scikit-learn.

Importing scikit-learn (and scipy through it) is most of the start-up time and memory, and the
committed model never needs it to predict. Each check runs in a fresh interpreter, because the
rest of the suite has long since imported scikit-learn into this one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

pytestmark = pytest.mark.integration  # each check runs in a fresh interpreter

HEAVY = ("sklearn", "scipy", "joblib")

SERVE_ONE_PREDICTION = textwrap.dedent(
    """
    import json, sys
    from conftest import make_settings
    from fastapi.testclient import TestClient
    from housing_api.app import create_app
    from housing_api.schemas import SAMPLE_BATCH

    with TestClient(create_app(make_settings())) as client:
        response = client.post("/predict", json=SAMPLE_BATCH)
        fast_path = client.app.state.service.model.fast_path
    imported = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[1:]))
    print(json.dumps({"status": response.status_code, "fast_path": fast_path, "imported": imported}))
    """
)


def test_app_serves_a_prediction_without_importing_sklearn() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SERVE_ONE_PREDICTION, *HEAVY],
        cwd=ROOT / "tests", capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"status": 200, "fast_path": True, "imported": []}, result.stderr


def test_model_and_fastpath_modules_do_not_import_sklearn() -> None:
    code = "import sys, housing_api.model, housing_api.fastpath; print(sorted(set(sys.argv[1:]) & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code, *HEAVY], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
