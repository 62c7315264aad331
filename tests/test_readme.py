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
