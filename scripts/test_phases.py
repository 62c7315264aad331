"""`make test`: the whole suite in two phases, with one skip summary and one exit status.

Usage: python scripts/test_phases.py --workers N --junit PATH [pytest args...]

1. the parallel phase: every test not marked `serial`, on N xdist workers (a module per worker);
2. the serial phase: the tests marked `serial` (timing-sensitive: a p99 against a threshold, a drain's
   grace period, k6 load) in one process, after the workers are gone, so nothing shares their cores.

Each phase writes its own JUnit report; they are merged into PATH (what `make fresh-test` hands to
scripts/check_skips.py), and the skips of both are listed once, at the end. The exit status is the
first failing phase's, else 0. Standard library only, like check_skips.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from check_skips import skipped_tests

NO_TESTS = 5  # pytest's exit status when a selection is empty: not a failure of that phase


def phases(workers: int, junit_dir: Path, extra: list[str]) -> list[tuple[str, list[str], Path]]:
    pytest = [sys.executable, "-m", "pytest", "-q", "-rfE", *extra]  # -rfE: skips are listed once, below
    parallel, serial = junit_dir / "parallel.xml", junit_dir / "serial.xml"
    return [
        ("parallel", [*pytest, "-n", str(workers), "--dist", "loadfile", "-m", "not serial", f"--junitxml={parallel}"],
         parallel),
        ("serial", [*pytest, "-n", "0", "-m", "serial", f"--junitxml={serial}"], serial),
    ]  # fmt: skip


def merge(reports: list[Path], out: Path) -> None:
    """One <testsuites> holding every phase's <testsuite>."""
    merged = ET.Element("testsuites")
    for report in reports:
        if report.exists():
            root = ET.parse(report).getroot()
            merged.extend(root.iter("testsuite"))
    ET.ElementTree(merged).write(out, encoding="utf-8", xml_declaration=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--junit", type=Path, required=True)
    args, extra = parser.parse_known_args()
    args.junit.parent.mkdir(parents=True, exist_ok=True)
    statuses = []
    for name, command, report in phases(args.workers, args.junit.parent, extra):
        report.unlink(missing_ok=True)
        print(f"== make test, {name} phase: {' '.join(command[3:])}", flush=True)
        statuses.append(subprocess.run(command).returncode)
    merge([report for _, _, report in phases(args.workers, args.junit.parent, extra)], args.junit)
    skipped = skipped_tests(str(args.junit))
    print(f"== {len(skipped)} skipped in both phases" + (":" if skipped else ""))
    for test, why in skipped:
        print(f"SKIPPED {test}: {why}")
    failed = [s for s in statuses if s not in (0, NO_TESTS)]
    print(f"== make test: parallel phase exited {statuses[0]}, serial phase {statuses[1]}")
    return failed[0] if failed else 0


if __name__ == "__main__":
    sys.exit(main())
