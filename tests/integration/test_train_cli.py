"""`housing-api train` from the command line: one clear line when something is missing, and a
re-run that changes nothing leaves every file byte for byte as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.integration  # `housing-api train` in a child process

DATA = ROOT.parent / "shared" / "data" / "sklearn"


def train(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("SCIKIT_LEARN_DATA", "MLFLOW_TRACKING_URI")}
    return subprocess.run(
        [sys.executable, "-m", "housing_api", "train", *args],
        env={**environment, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip


def only_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout + result.stderr
    return lines[0]


@pytest.mark.parametrize("where", ["unset", "empty", "missing"])
def test_train_without_the_data_says_what_to_do_in_one_line(tmp_path: Path, where: str) -> None:
    env = {"HOME": str(tmp_path)}  # unset: scikit-learn's default ~/scikit_learn_data
    if where == "empty":
        (tmp_path / "empty").mkdir()
        env["SCIKIT_LEARN_DATA"] = str(tmp_path / "empty")
    elif where == "missing":
        env["SCIKIT_LEARN_DATA"] = str(tmp_path / "nope")
    line = only_line(train("--out", str(tmp_path / "m" / "model.joblib"), **env))
    assert line.startswith("housing-api: cannot train: ")
    assert "SCIKIT_LEARN_DATA" in line and "--download" in line
    assert not (tmp_path / "m").exists() and not (tmp_path / "nope").exists()


def test_register_without_a_tracking_server_stops_before_training(tmp_path: Path) -> None:
    line = only_line(train("--out", str(tmp_path / "model.joblib"), "--register", SCIKIT_LEARN_DATA=str(DATA)))
    assert "MLFLOW_TRACKING_URI" in line
    assert not (tmp_path / "model.joblib").exists()


@pytest.mark.skipif(not (DATA / "cal_housing_py3.pkz").is_file(), reason=f"offline data copy not found at {DATA}")
def test_retraining_the_same_model_rewrites_identical_bytes(tmp_path: Path) -> None:
    out = tmp_path / "model.joblib"
    files = [out, out.with_suffix(".json"), out.with_suffix(".forest.npz")]
    assert train("--out", str(out), "--max-iter", "5", SCIKIT_LEARN_DATA=str(DATA)).returncode == 0
    first = [path.read_bytes() for path in files]
    assert train("--out", str(out), "--max-iter", "5", SCIKIT_LEARN_DATA=str(DATA)).returncode == 0
    assert [path.read_bytes() for path in files] == first
    # A different model is a new version with a new created_at.
    assert train("--out", str(out), "--max-iter", "6", SCIKIT_LEARN_DATA=str(DATA)).returncode == 0
    assert out.with_suffix(".json").read_bytes() != first[1]


def test_make_train_writes_outside_the_committed_model_unless_asked() -> None:
    def command(*args: str) -> str:
        result = subprocess.run(["make", "-n", "train", *args], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        return next(line for line in result.stdout.splitlines() if "housing-api train" in line)

    assert "--out build/model/model.joblib" in command()
    assert "--out model/model.joblib" in command("TRAIN_OUT=model")
