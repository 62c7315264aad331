"""The README stays true: every setting is documented, and the quickstart commands exist."""

import re

from conftest import ROOT

from housing_api.config import Settings


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.M))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_quickstart_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("install", "run", "test"):
        assert re.search(rf"^{target}:", makefile, flags=re.M), target


def test_readme_and_openapi_examples_are_what_the_committed_model_answers() -> None:
    import json

    from conftest import app_client

    from housing_api.schemas import SAMPLE_BATCH

    with app_client() as client:
        answer = client.post("/predict", json=SAMPLE_BATCH).json()
        example = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["responses"]["200"]["content"]
    readme = (ROOT / "README.md").read_text()
    quoted = re.search(r'"prediction": (\[[^]]*\]),\n "model_version": "([0-9a-f]{64})"', readme)
    assert quoted is not None
    assert (json.loads(quoted[1]), quoted[2]) == (answer["prediction"], answer["model_version"])
    assert f'"query_key": "{answer["query_key"]}"' in readme
    sample = example["application/json"]["example"]
    assert {k: sample[k] for k in ("query_key", "prediction", "model_version")} == {
        k: answer[k] for k in ("query_key", "prediction", "model_version")
    }


def test_every_test_the_readme_lets_skip_exists() -> None:
    # A moved or renamed test would leave a stale line that allows nothing (scripts/check_skips.py).
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### What `make test` may skip") :]
    section = section[: section.index("\n## ")]
    listed = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?", section)
    assert listed
    for path, name in listed:
        assert (ROOT / path).is_file(), path
        assert not name or re.search(rf"^def {name}\(", (ROOT / path).read_text(), flags=re.M), f"{path}::{name}"
