"""cli.py in this process: the arguments each command takes, and the one line (exit code 2) a command
prints when it cannot go on. Starting a real server from the command line: tests/integration/test_startup.py."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from housing_api import cli
from housing_api.app import RESOLVER_STOP_S
from housing_api.config import Settings


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """An environment that names none of the settings (the developer's or CI's own left out). serve
    sets OMP_NUM_THREADS and configures the root logger before it gives up: both put back after."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield monkeypatch
    root.handlers[:] = handlers
    root.setLevel(level)


def test_serve_defaults() -> None:
    args = parse("serve")
    assert (args.host, args.port, args.graceful_timeout, args.drain_seconds) == ("127.0.0.1", 8000, None, 0.5)
    assert args.func is cli._serve


def test_serve_takes_its_options() -> None:
    args = parse("serve", "--host", "0.0.0.0", "--port", "8080", "--graceful-timeout", "7", "--drain-seconds", "1")
    assert (args.host, args.port, args.graceful_timeout, args.drain_seconds) == ("0.0.0.0", 8080, 7.0, 1.0)


def test_train_defaults_and_options() -> None:
    args = parse("train")
    assert (args.out, args.download, args.max_iter, args.register, args.model_name, args.alias) == (
        "model/model.joblib", False, None, False, "housing", None,
    )  # fmt: skip
    args = parse("train", "--out", "x/m.joblib", "--max-iter", "5", "--register", "--alias", "champion")
    assert (args.out, args.max_iter, args.register, args.alias) == ("x/m.joblib", 5, True, "champion")


def test_reregister_needs_the_old_version() -> None:
    assert parse("reregister", "models:/housing/3").uri == "models:/housing/3"


@pytest.mark.parametrize(
    "argv", [[], ["bogus"], ["serve", "--port", "eighty"], ["train", "--max-iter", "x"], ["reregister"]]
)
def test_a_missing_command_or_a_bad_argument_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "usage: housing-api" in capsys.readouterr().err


def test_serve_runs_one_worker_per_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    usage = capsys.readouterr().out
    assert "--port" in usage
    assert "--workers" not in usage


def test_serve_ignores_a_leftover_multiprocess_directory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp/left-over")
    cli._single_process_metrics()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert "ignoring PROMETHEUS_MULTIPROC_DIR" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("drain", "given", "expected"),
    [(0.5, None, 22), (0.5, 3.0, 3), (29.0, None, 1)],  # SHUTDOWN_TIMEOUT_S 30 - drain - resolver stop - 2
)
def test_uvicorns_drain_is_what_the_shutdown_deadline_leaves(drain: float, given: float | None, expected: int) -> None:
    args = argparse.Namespace(drain_seconds=drain, graceful_timeout=given)
    assert cli.graceful_timeout(args, 30.0, RESOLVER_STOP_S) == expected


def test_serve_with_a_bad_setting_stops_with_one_line(
    no_settings: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    no_settings.setenv("MAX_BATCH_ROWS", "abc")
    assert cli.main(["serve", "--port", "1"]) == 2
    line = one_line(capsys)
    assert line.startswith("housing-api: cannot start: MAX_BATCH_ROWS=abc")


def test_serve_without_its_model_stops_with_one_line(
    no_settings: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_settings.setenv("MODEL_PATH", str(tmp_path / "none.joblib"))
    assert cli.main(["serve", "--port", "1"]) == 2
    line = one_line(capsys)
    assert line.startswith("housing-api: cannot start: ") and "none.joblib" in line


def test_fetch_model_needs_a_registry_uri(no_settings: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["fetch-model"]) == 2
    assert one_line(capsys) == "housing-api: cannot fetch: set MODEL_URI (or --uri) to models:/<name>/<version>"
