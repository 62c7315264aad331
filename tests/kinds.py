"""Which side of `make check` a test is on: unit (the default) or integration.

A unit test runs in this process only: no child process, no network connection, no server. Everything
else carries the `integration` marker, and `make check` (`pytest -m "not integration"`) leaves it out.
The split cannot drift, because it is decided for the author, not remembered by them:

- a test in a folder named for what it exercises (`INTEGRATION_DIRS`) is marked integration;
- a test that asks for a fixture that starts a real process (`PROCESS_FIXTURES`) is marked integration;
- a test left unmarked that still spawns a process or opens a connection fails on the spot, in
  `make check` and `make test` alike, with the line to add (`UnitTestLeak`).

`--unit` (what `make check` passes) also skips importing the modules marked integration as a whole:
importing them (schemathesis, selenium, MLflow, kubernetes-validate) costs seconds and runs nothing.
conftest.py imports these hooks so pytest finds them.
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# Fixtures that start a process (redis-server, the image build, kubectl): a test asking for one is
# integration without saying so. Fixtures of modules marked integration as a whole need not be here.
PROCESS_FIXTURES = frozenset({"redis_url", "own_redis", "built_image", "rendered"})
# tests/<one of these>/...: every test there runs processes. Not tests/deployment/: most of its tests
# read the manifests, the Dockerfile and the alert rules in this process, and belong in `make check`;
# the ones that render, build or start something are integration by fixture, mark or UnitTestLeak.
INTEGRATION_DIRS = frozenset({"integration", "load", "image"})
MODULE_MARK = re.compile(r"^pytestmark\s*=.*\bpytest\.mark\.integration\b", re.M)
HOW = "mark it integration (a module: pytestmark = pytest.mark.integration; a test: @pytest.mark.integration)"


class UnitTestLeak(RuntimeError):
    """A test not marked integration tried to leave the process."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--unit", action="store_true", help="unit tests only; modules marked integration are not imported")


def _in_integration_dir(path: Path) -> bool:
    return path.parent.name in INTEGRATION_DIRS and path.parent.parent.name == "tests"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if config.getoption("--unit") and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return _in_integration_dir(collection_path) or bool(MODULE_MARK.search(collection_path.read_text())) or None
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _in_integration_dir(item.path) or PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    if config.getoption("--unit"):
        items[:] = [item for item in items if item.get_closest_marker("integration") is None]


def _refuse(what: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise UnitTestLeak(f"a unit test {what}: {HOW}")

    return refuse


@contextmanager
def _in_process_only(item: pytest.Item) -> Iterator[None]:
    """Unmarked tests may not spawn a process or connect anywhere (a loopback socket bind is fine)."""
    if item.get_closest_marker("integration") is not None:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", _refuse("started a child process"))
        patch.setattr(socket.socket, "connect", _refuse("opened a network connection"))
        patch.setattr(socket.socket, "connect_ex", _refuse("opened a network connection"))
        yield


# Setup too, not only the call: a module- or session-scoped fixture is set up for the first test that
# asks for it, so a process it starts is that test's doing.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _in_process_only(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _in_process_only(item):
        return (yield)
