"""The artifact: verified before it is unpickled, reproducible, and good enough."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MODEL_PATH, ROOT

from housing_api.errors import IncompatibleModel, ModelArtifactMismatch, ModelArtifactMissing
from housing_api.model import load_model, sha256_hex

DATA = ROOT.parent / "shared" / "data" / "sklearn"


def copy_model(tmp_path: Path) -> Path:
    target = tmp_path / "model.joblib"
    shutil.copy(MODEL_PATH, target)
    shutil.copy(MODEL_PATH.with_suffix(".json"), target.with_suffix(".json"))
    return target


def test_committed_model_meets_the_quality_bar() -> None:
    meta = json.loads(MODEL_PATH.with_suffix(".json").read_text())
    assert meta["holdout_r2"] >= 0.85
    assert meta["version"] == sha256_hex(MODEL_PATH.read_bytes())
    assert meta["train_rows"] + meta["test_rows"] == 20640


def test_tampered_artifact_is_refused_before_unpickling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = copy_model(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    monkeypatch.setattr("joblib.load", lambda *_a, **_k: pytest.fail("unpickled a tampered artifact"))
    with pytest.raises(ModelArtifactMismatch, match="sha256"):
        load_model(path)


def test_missing_artifact_or_metadata_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelArtifactMissing, match="housing-api train"):
        load_model(tmp_path / "model.joblib")
    path = copy_model(tmp_path)
    path.unlink()
    with pytest.raises(ModelArtifactMissing, match="not found"):
        load_model(path)


def test_other_sklearn_version_is_refused(tmp_path: Path) -> None:
    path = copy_model(tmp_path)
    meta_file = path.with_suffix(".json")
    meta = json.loads(meta_file.read_text())
    meta["sklearn_version"] = "0.24.2"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(IncompatibleModel, match=r"scikit-learn==0\.24\.2"):
        load_model(path)


def serve_exit(model_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODEL_PATH": str(model_path)}
    return subprocess.run(
        [sys.executable, "-m", "housing_api", "serve", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_serve_refuses_a_tampered_artifact_with_one_clear_line(tmp_path: Path) -> None:
    path = copy_model(tmp_path)
    path.write_bytes(path.read_bytes() + b"\x00")
    result = serve_exit(path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "sha256" in lines[0] and "refusing" in lines[0]


def test_serve_refuses_a_missing_artifact(tmp_path: Path) -> None:
    result = serve_exit(tmp_path / "nope.joblib")
    assert result.returncode == 2
    assert "housing-api train" in result.stderr


@pytest.mark.skipif(not DATA.is_dir(), reason=f"offline data copy not found at {DATA}")
def test_training_reproduces_the_committed_metrics(tmp_path: Path) -> None:
    out = tmp_path / "model.joblib"
    env = {**os.environ, "SCIKIT_LEARN_DATA": str(DATA)}
    subprocess.run([sys.executable, "-m", "housing_api", "train", "--out", str(out)], env=env, check=True, timeout=600)
    new = json.loads(out.with_suffix(".json").read_text())
    committed = json.loads(MODEL_PATH.with_suffix(".json").read_text())
    for field in ("holdout_r2", "holdout_mae", "train_rows", "test_rows", "params", "features"):
        assert new[field] == committed[field], field
    assert new["holdout_r2"] >= 0.85
    load_model(out)  # what train writes, the service accepts
