"""A few-second run of `make bench`, to keep the benchmark working, and the report's arithmetic.

Nothing here asserts a timing: the smoke run checks that every server answered and the report was
written; the report tests feed bench/bench_report.py made-up results and check its verdicts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import bench_report as report  # bench/bench_report.py (not loadtest/report.py)


@pytest.mark.integration
def test_bench_runs_both_load_generators_and_writes_its_report(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (make deps installs it when root)")
    if not (Path(sys.executable).parent / "k6").exists():
        pytest.skip("k6 is not installed in the virtual environment (make install)")
    out, raw = tmp_path / "benchmarks.md", tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--duration", "2s", "--rounds", "1", "--processes", "1",
         "--scenarios", "hits,fixed-1000rps-hits", "--no-ablations", "--json", str(raw), "--write", str(out)],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    runs = json.loads(raw.read_text())["runs"]
    assert {(r["scenario"], r["target"]) for r in runs} == {
        (s, t) for s in ("hits", "fixed-1000rps-hits") for t in ("ceiling", report.RAW, "service")
    }
    assert all(r["rps"] > 0 and r["failed"] == 0 for r in runs), runs
    text = out.read_text()
    for needle in ("| hits | ceiling |", "| hits | service |", "fixed-1000rps-hits: service p99", "`uptime`"):
        assert needle in text


# -- bench/bench_report.py on made-up results ------------------------------------------------------------
def run(scenario: str, target: str, rnd: int, rps: float, batch: int = 1, **extra: float) -> dict[str, Any]:
    values = {"p50_ms": 1.0, "p99_ms": 3.0, "failed": 0.0, "rss_mb": 90.0, "ready_s": 1.0, "load1": 1.0, **extra}
    return {"scenario": scenario, "target": target, "round": rnd, "rps": rps, "rows_per_s": rps * batch, **values}


def result(runs: list[dict[str, Any]]) -> dict[str, Any]:
    when = {"time": "t", "uptime": "load average: 1.00, 1.00, 1.00"}
    return {"runs": runs, "rounds": 2, "duration": "1s", "k6_duration": "1s", "started": when, "finished": when}


def verdict_of(table: str, label: str) -> str:
    line = next(line for line in table.splitlines() if label in line)
    return line.rsplit("|", 2)[1].strip()


def test_ratio_targets_use_medians_and_show_each_rounds_ratio() -> None:
    batch = "batch100-half-repeated"
    bench = report.medians(result([
        run(batch, "ceiling", 0, 1000, batch=100), run(batch, "service", 0, 1050, batch=100),
        run(batch, "ceiling", 1, 1000, batch=100), run(batch, "service", 1, 990, batch=100),
        run("hits", "ceiling", 0, 1000), run("hits", "service", 0, 1900),
        run("hits", "ceiling", 1, 1000), run("hits", "service", 1, 1940),
    ]))  # fmt: skip
    table = report.targets_table(bench, [])
    assert verdict_of(table, "batch100-half-repeated") == "**met**"  # median 102,000 of 100,000 rows/s
    assert "each round: 105%, 99%" in table
    assert verdict_of(table, "hits: service >= 2x ceiling") == "**not met**"  # 1.9x
    assert verdict_of(table, "misses: service") == "not measured"
    assert verdict_of(table, "MLServer") == "not measured"


def test_p99_target_is_the_ceilings_p99_and_needs_the_offered_rate_carried() -> None:
    hits, misses = "fixed-1000rps-hits", "fixed-1000rps-misses"
    bench = report.medians(result([
        run(hits, "service", 0, 1000, p99_ms=4.0), run(hits, "service", 1, 999, p99_ms=4.5),
        run(hits, "ceiling", 0, 1000, p99_ms=5.0), run(hits, "ceiling", 1, 1000, p99_ms=4.0),
        run(misses, "service", 0, 700, p99_ms=2.0), run(misses, "service", 1, 700, p99_ms=2.0),
        run(misses, "ceiling", 0, 1000, p99_ms=3.0), run(misses, "ceiling", 1, 1000, p99_ms=3.0),
    ]))  # fmt: skip
    table = report.targets_table(bench, [])
    assert verdict_of(table, "fixed-1000rps-hits") == "**met**"  # 4.25 ms against the ceiling's 4.5 ms
    assert verdict_of(table, "fixed-1000rps-misses") == "**not met**"  # fast, but only 700 of 1,000 req/s
    assert "carried 700 req/s" in table


def test_the_spread_is_between_the_medians_of_fresh_processes() -> None:
    runs = [run("hits", "service", r, rps, process=r // 2) for r, rps in enumerate([900, 1100, 1000, 1000, 950, 1250])]
    (hits,) = report.medians(result(runs))
    assert hits.spread == pytest.approx((1100 - 1000) / 1000)  # process medians 1000, 1000, 1100
    table = report.targets_table([hits], [])
    assert verdict_of(table, "spread between fresh processes") == "**not met**"  # 10% is not under 10%
    assert "hits 10%" in table


def test_peer_targets_are_multiples() -> None:
    peers = report.medians(result([
        run("hits", "service", 0, 3000), run("hits", "MLServer", 0, 1000),
        run("misses", "service", 0, 3000), run("misses", "MLServer", 0, 250),
    ]))  # fmt: skip
    table = report.targets_table([], peers)
    assert verdict_of(table, "hits: service >= 2x MLServer") == "**met**"
    assert "3.0x" in table
    assert verdict_of(table, "misses: service >= 15x MLServer") == "**not met**"  # 12x


def test_profile_summary_counts_self_and_inclusive_samples() -> None:
    raw = "\n".join([
        "thread (1): MainThread;serve (housing_api/cli.py:5);set_many (housing_api/cache.py:10);"
        "pack (redis/asyncio/connection.py:3) 6",
        "thread (1): MainThread;serve (housing_api/cli.py:5);validate (pydantic/type_adapter.py:7) 3",
        "thread (1): MainThread;serve (housing_api/cli.py:9) 1",
        "not a stack line",
    ])  # fmt: skip
    profile = report.summarise_profile(raw)
    assert profile["samples"] == 10
    assert profile["packages"][0] == ("redis", 6)
    assert ("validate (pydantic/type_adapter.py)", 3) in profile["self"]
    total = dict(profile["total"])
    assert total["serve (housing_api/cli.py)"] == 10  # line numbers merged
    assert total["set_many (housing_api/cache.py)"] == 6
    assert "validate (pydantic/type_adapter.py)" not in total  # the inclusive table keeps our code and redis
    assert "60.0%" in report.profile_section(profile)


def test_rewriting_the_report_keeps_the_hand_written_notes(tmp_path: Path) -> None:
    doc, bench = tmp_path / "benchmarks.md", tmp_path / "bench.json"
    bench.write_text(json.dumps(result([run("hits", "ceiling", 0, 1000), run("hits", "service", 0, 990)])))
    report.write(doc, bench, tmp_path / "missing.json")
    text = doc.read_text()
    doc.write_text(text.replace(report.NOTES_END, "Why hits fell short.\n" + report.NOTES_END))
    report.write(doc, bench, tmp_path / "missing.json")
    again = doc.read_text()
    assert "Why hits fell short." in again
    assert again.count(report.NOTES_START) == 1
    assert "`make bench-peers`: not run yet." in again
