"""Where code lives: tools never reach into tests/, the image never carries the harness, every
script has a make target. (The layers inside src/ are import-linter's: [tool.importlinter].)"""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path

from conftest import ROOT

TOOL_DIRS = ("src", "bench", "loadtest", "scripts")
# tests/ on sys.path, or a module that only tests/ holds.
REACHES_INTO_TESTS = re.compile(
    r"""sys\.path.*["']tests["']|^\s*(from|import)\s+(conftest|harness|prom|helpers|test_\w+)\b""",
    re.M,
)
# Modules that other scripts start or import, not commands of their own: who runs each.
RUN_BY = {
    "bench/ceiling_app.py": "bench/run.py",
    "bench/raw_asgi_app.py": "bench/run.py",
    "scripts/check_skips.py": "scripts/fresh-test-inside.sh",
}


def python_files(*dirs: str) -> list[Path]:
    return [p for d in dirs for p in sorted((ROOT / d).rglob("*.py"))]


def test_no_tool_or_service_module_reaches_into_tests() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in python_files(*TOOL_DIRS) if REACHES_INTO_TESTS.search(p.read_text())]
    assert offenders == [], "import it from housing_api_testing instead (src/housing_api_testing/)"


def test_no_test_module_imports_another_test_module() -> None:
    # What two test modules share goes to tests/helpers/ or a fixture in conftest.py.
    imports_a_test = re.compile(r"^\s*(from|import)\s+test_\w+\b", re.M)
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py") if imports_a_test.search(p.read_text())
    ]
    assert offenders == [], "move what they share into tests/helpers/ or a conftest.py fixture"


def test_unit_tests_are_named_after_the_module_they_test() -> None:
    # tests/unit/ mirrors src/housing_api/: test_<module>.py, or test_<module>_<case>.py for a case that
    # needs its own interpreter (test_model_without_sklearn.py hides scikit-learn).
    modules = {p.stem for p in (ROOT / "src" / "housing_api").glob("*.py")}
    strays = [
        p.name
        for p in sorted((ROOT / "tests" / "unit").glob("test_*.py"))
        if not any(p.stem == f"test_{m}" or p.stem.startswith(f"test_{m}_") for m in modules)
    ]
    assert strays == [], "name a unit test file after the src/housing_api/ module it tests"


# Modules with nothing of their own to test: __init__ holds two constants (its version falls back
# to 0.0.0 uninstalled) and __main__ is `main()` (`python -m housing_api` in the integration tests).
# The C shims (_fastpath.c, _batchjson.c) are not .py modules: test_fastpath.py and test_batch_json.py
# hold them equal to the Python paths they speed up.
NO_UNIT_FILE = {"__init__", "__main__"}


def test_every_module_has_its_unit_test_file() -> None:
    unit = ROOT / "tests" / "unit"
    modules = sorted(p.stem for p in (ROOT / "src" / "housing_api").glob("*.py") if p.stem not in NO_UNIT_FILE)
    missing = [f"tests/unit/test_{m}.py" for m in modules if not (unit / f"test_{m}.py").is_file()]
    assert missing == [], "give the module its unit tests (CONTRIBUTING.md, 'Where a test goes')"


def test_no_two_test_modules_share_a_name() -> None:
    # tests/ has no __init__.py: pytest imports each test module by its bare name, and a second
    # tests/<other folder>/test_x.py fails the collection of `make test` (`make check` leaves
    # integration modules out, so it would not see the clash). Integration twins end in _live.
    names = sorted(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    clashes = sorted({n for n in names if names.count(n) > 1})
    assert clashes == [], "rename one of each (tests/integration/test_<module>_live.py)"


def test_the_wheel_and_so_the_image_leave_the_harness_out() -> None:
    # What setuptools' find does with `include` (fnmatch on dotted names): setuptools is not in .venv.
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    where = ROOT / find["where"][0]
    found = [".".join(i.parent.relative_to(where).parts) for i in where.rglob("__init__.py")]
    packages = [p for p in found if any(fnmatchcase(p, pattern) for pattern in find["include"])]
    assert "housing_api" in packages
    assert [p for p in packages if p.startswith("housing_api_testing")] == []


def test_every_script_has_a_make_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    scripts = [p for p in python_files("bench", "loadtest", "scripts") if "__main__" in p.read_text()]
    missing = []
    for path in scripts:
        name = str(path.relative_to(ROOT))
        runner = RUN_BY.get(name)
        started = runner is not None and path.name in (ROOT / runner).read_text()
        if name not in makefile and not started:
            missing.append(name)
    assert missing == [], "add a target to the Makefile (and a row to README's Development table)"
