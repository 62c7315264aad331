"""The unit/integration split of kinds.py, run on small test modules in a pytest of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # the inner tests really start a process

CONFTEST = """
import pytest
from kinds import (pytest_addoption, pytest_collection_modifyitems, pytest_ignore_collect,
                   pytest_runtest_call, pytest_runtest_setup)

@pytest.fixture
def own_redis():  # the name is what counts: conftest's own_redis starts redis-server
    return None

@pytest.fixture(scope="module")
def spawned_once():
    import subprocess
    return subprocess.run(["true"], check=True).returncode
"""

UNMARKED = """
import socket, subprocess

def test_spawns():
    subprocess.run(["true"], check=True)

def test_connects():
    socket.create_connection(("127.0.0.1", 9), timeout=1)

def test_a_wider_fixture_spawns(spawned_once):
    pass

def test_stays_in_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))

def test_asks_for_a_process_fixture(own_redis):
    import subprocess
    subprocess.run(["true"], check=True)
"""

MARKED = """
import subprocess
import pytest

pytestmark = pytest.mark.integration

def test_spawns():
    subprocess.run(["true"], check=True)
"""


def suite_in(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.syspathinsert(Path(__file__).parent)  # kinds.py
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_unmarked=UNMARKED, test_marked=MARKED)
    return pytester


def test_an_unmarked_test_that_leaves_the_process_fails_and_says_what_to_add(pytester: pytest.Pytester) -> None:
    result = suite_in(pytester).runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=2, errors=1)
    result.stdout.fnmatch_lines(["*UnitTestLeak: a unit test started a child process: mark it integration*"])
    result.stdout.fnmatch_lines(["*UnitTestLeak: a unit test opened a network connection*"])
    result.stdout.fnmatch_lines(["ERROR*test_a_wider_fixture_spawns*"])


def test_a_test_in_an_integration_folder_is_integration(pytester: pytest.Pytester) -> None:
    suite_in(pytester)
    pytester.mkpydir("tests")  # a package path: tests/integration/test_x.py, as the folders will be
    (pytester.path / "tests" / "__init__.py").unlink()
    (pytester.path / "tests" / "integration").mkdir()
    (pytester.path / "tests" / "integration" / "test_folder.py").write_text(UNMARKED.split("def test_connects")[0])
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "tests/integration")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--unit", "tests/integration")
    result.assert_outcomes()


def test_unit_runs_only_unmarked_tests_and_skips_importing_marked_modules(pytester: pytest.Pytester) -> None:
    result = suite_in(pytester).runpytest_inprocess("-p", "no:cacheprovider", "--unit", "-v")
    result.assert_outcomes(passed=1, failed=2, errors=1)
    assert "test_asks_for_a_process_fixture" not in result.stdout.str()
    assert "test_marked.py" not in result.stdout.str()
