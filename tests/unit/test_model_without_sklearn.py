"""The runtime image has no scikit-learn (the `train` extra): the forest file serves, or nothing does.

tests/image/test_image.py proves it in the real image, where scikit-learn is absent; here the same rules
run in-process, with scikit-learn reported missing and unpickling forbidden.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import MODEL_PATH

from housing_api.errors import IncompatibleModel
from housing_api.model import forest_path, load_model, manifest_digest, verify_artifact


@pytest.fixture
def no_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("housing_api.model.installed_sklearn_version", lambda: "none")
    monkeypatch.setattr("joblib.load", lambda *_a, **_k: pytest.fail("unpickled without scikit-learn"))


def copy_model(tmp_path: Path, *, forest: bool = True, **meta: object) -> Path:
    target = tmp_path / "model.joblib"
    shutil.copy(MODEL_PATH, target)
    if forest:
        shutil.copy(forest_path(MODEL_PATH), forest_path(target))
    raw = {**json.loads(MODEL_PATH.with_suffix(".json").read_text()), **meta}
    kept = {k: v for k, v in raw.items() if v is not None}
    # Re-signed as train writes it: the version is the digest of model.json's content (model.py).
    target.with_suffix(".json").write_text(json.dumps({**kept, "version": manifest_digest(kept)}))
    return target


@pytest.mark.usefixtures("no_sklearn")
def test_committed_model_serves_from_the_forest_file_without_scikit_learn() -> None:
    model = load_model(MODEL_PATH)
    assert model.fast_path
    X = np.array([[8.3252, 42, 6.98, 1.02, 322, 2.55, 37.88, -122.23]])
    assert model.predict(X).shape == (1,)


@pytest.mark.usefixtures("no_sklearn")
def test_the_recorded_scikit_learn_version_does_not_matter_when_nothing_is_unpickled(tmp_path: Path) -> None:
    assert load_model(copy_model(tmp_path, sklearn_version="0.24.2")).fast_path


@pytest.mark.usefixtures("no_sklearn")
@pytest.mark.parametrize(
    ("forest", "meta", "why"),
    [
        (False, {"forest_sha256": None, "forest_format": None}, "model.json names no forest file"),
        (False, {}, "model.forest.npz is missing"),
    ],
    ids=["fast-path-does-not-cover-it", "forest-file-missing"],
)
def test_a_model_the_fast_path_cannot_serve_is_refused_with_the_fix(
    tmp_path: Path, forest: bool, meta: dict[str, object], why: str
) -> None:
    path = copy_model(tmp_path, forest=forest, **meta)
    for check in (verify_artifact, load_model):
        with pytest.raises(IncompatibleModel, match="cannot be served without scikit-learn") as refused:
            check(path)
        message = str(refused.value)
        assert why in message and "housing-api[train]" in message and "\n" not in message


def test_with_scikit_learn_the_same_model_falls_back_to_unpickling(tmp_path: Path) -> None:
    path = copy_model(tmp_path, forest=False, forest_sha256=None, forest_format=None)
    assert verify_artifact(path).forest_sha256 is None
    assert type(load_model(path).estimator).__name__ == "Pipeline"


@pytest.mark.integration
def test_train_without_scikit_learn_says_what_to_install_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    # A module finder that refuses scikit-learn, as in the runtime image.
    block = (
        "import sys\n"
        "class NoSklearn:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('sklearn', 'joblib'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoSklearn())\n"
        "from housing_api.cli import main\n"
        "sys.exit(main(['train', '--out', sys.argv[1]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", block, str(tmp_path / "m.joblib")], capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "install the train extra" in lines[0]
