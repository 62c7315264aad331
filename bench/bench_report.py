"""docs/benchmarks.md from build/bench.json (`make bench`) and build/bench-peers.json (`make bench-peers`).

Pure functions over the JSON that bench/run.py writes, so the verdicts can be tested without a
load run. The section between the NOTES markers is written by hand and kept across re-renders.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOTES_START = "<!-- notes: written by hand, kept when bench/bench_report.py rewrites this file -->"
NOTES_END = "<!-- /notes -->"
RAW = "raw ASGI"
"""The stack's own limit (bench/raw_asgi_app.py), beside the ceiling app."""


@dataclass
class Summary:
    """The median of one server's runs in one scenario, and every run's value for context."""

    scenario: str
    target: str
    rps: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    failed: float
    rss_mb: float
    runs_rps: dict[int, float]
    """requests/s of each round's run, by round"""
    runs_rows: dict[int, float]
    spread: float = float("nan")
    """(largest - smallest) / median of the medians of each fresh process's runs (rows/s)."""


def medians(result: dict[str, Any]) -> list[Summary]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in result["runs"]:
        groups.setdefault((run["scenario"], run["target"]), []).append(run)
    out = []
    for (scenario, target), runs in groups.items():

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return float(statistics.median(r[key] for r in runs))

        out.append(
            Summary(
                scenario,
                target,
                med("rps"),
                med("rows_per_s"),
                med("p50_ms"),
                med("p99_ms"),
                max(r["failed"] for r in runs),
                max(r["rss_mb"] for r in runs),
                {r["round"]: r["rps"] for r in runs},
                {r["round"]: r["rows_per_s"] for r in runs},
                process_spread(runs),
            )
        )
    return out


def process_spread(runs: list[dict[str, Any]]) -> float:
    """How far apart fresh processes of one server are: each process's median rows/s, then the
    range of those over their median; NaN with fewer than two processes."""
    by_process: dict[int, list[float]] = {}
    for r in runs:
        by_process.setdefault(r.get("process", 0), []).append(r["rows_per_s"])
    per = [statistics.median(v) for v in by_process.values()]
    if len(per) < 2:
        return float("nan")
    return (max(per) - min(per)) / statistics.median(per)


def find(summaries: list[Summary], scenario: str, target: str) -> Summary | None:
    return next((s for s in summaries if s.scenario == scenario and s.target == target), None)


def _runs(values: dict[int, float]) -> str:
    return ", ".join(f"{v:,.0f}" for _, v in sorted(values.items()))


def paired_ratios(svc: dict[int, float], ref: dict[int, float]) -> list[float]:
    """Each round's ratio: the two runs of a round ran back to back, under the same load."""
    return [svc[r] / ref[r] for r in sorted(svc) if ref.get(r)]


def runs_table(summaries: list[Summary], base: str = "ceiling") -> str:
    anchors = [base] if base != "ceiling" else ["ceiling", RAW]
    lines = [
        "| scenario | server | requests/s | rows/s | each run's rows/s | spread over processes | p50 ms | p99 ms "
        "| failed | " + " | ".join(f"vs {a}" for a in anchors) + " | RSS MB |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|" + "---:|" * len(anchors) + "---:|",
    ]
    for s in summaries:
        ratios = [_distance(summaries, s, anchor, times=base != "ceiling") for anchor in anchors]
        spread = "" if s.spread != s.spread else f"{s.spread:.0%}"  # NaN: one process
        lines.append(
            f"| {s.scenario} | {s.target} | {s.rps:,.0f} | {s.rows_per_s:,.0f} | {_runs(s.runs_rows)} | {spread} "
            f"| {s.p50_ms:.2f} | {s.p99_ms:.2f} | {s.failed:.2%} | {' | '.join(ratios)} | {s.rss_mb:.0f} |"
        )
    return "\n".join(lines)


def _distance(summaries: list[Summary], s: Summary, anchor: str, times: bool) -> str:
    """The server's rows/s as a share of the anchor's (throughput), or its p99 over the anchor's (fixed rate)."""
    ref = find(summaries, s.scenario, anchor)
    if ref is None or s.target == anchor:
        return ""
    if "fixed" in s.scenario:
        return f"p99 {s.p99_ms / ref.p99_ms:.2f}x"
    x = s.rows_per_s / ref.rows_per_s
    return f"{x:.1f}x" if times else f"{x:.0%}"


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


def _ratio_row(summaries: list[Summary], scenario: str, target: str, base: str, goal: float, what: str) -> str:
    svc, ref = find(summaries, scenario, target), find(summaries, scenario, base)
    times = goal >= 1.5  # "2x MLServer" rather than "200% of the ceiling app"
    label = f"{scenario}: {target} >= {goal:g}x {base}'s {what}" if times else \
        f"{scenario}: {target} >= {goal:.0%} of {base}'s {what}"  # fmt: skip
    if svc is None or ref is None:
        return f"| {label} | | not measured |"
    rows = what == "rows/s"
    got = (svc.rows_per_s / ref.rows_per_s) if rows else (svc.rps / ref.rps)
    shown = (lambda x: f"{x:.1f}x") if times else (lambda x: f"{x:.0%}")
    pairs = paired_ratios(svc.runs_rows, ref.runs_rows) if rows else paired_ratios(svc.runs_rps, ref.runs_rps)
    a, b = (svc.rows_per_s, ref.rows_per_s) if rows else (svc.rps, ref.rps)
    detail = f"{shown(got)} ({a:,.0f} vs {b:,.0f} {what}; each round: {', '.join(shown(x) for x in pairs)})"
    return f"| {label} | {detail} | {verdict(got >= goal)} |"


def _p99_row(summaries: list[Summary], scenario: str, goal_ms: float, rate: float) -> str:
    svc = find(summaries, scenario, "service")
    label = f"{scenario}: service p99 <= {goal_ms:g} ms"
    if svc is None:
        return f"| {label} | | not measured |"
    # The p99 only counts at the offered rate with nothing refused.
    carried = svc.rps >= 0.98 * rate and svc.failed == 0
    note = "" if carried else f", but carried {svc.rps:,.0f} req/s with {svc.failed:.1%} failed"
    return f"| {label} | {svc.p99_ms:.2f} ms (p50 {svc.p50_ms:.2f} ms){note} | {verdict(svc.p99_ms <= goal_ms and carried)} |"


def _p99_vs_row(summaries: list[Summary], scenario: str, base: str, rate: float) -> str:
    svc, ref = find(summaries, scenario, "service"), find(summaries, scenario, base)
    label = f"{scenario}: service p99 <= {base}'s p99"
    if svc is None or ref is None:
        return f"| {label} | | not measured |"
    carried = svc.rps >= 0.98 * rate and svc.failed == 0
    note = "" if carried else f", but carried {svc.rps:,.0f} req/s with {svc.failed:.1%} failed"
    got = f"{svc.p99_ms:.2f} ms vs {ref.p99_ms:.2f} ms (p50 {svc.p50_ms:.2f} vs {ref.p50_ms:.2f} ms){note}"
    return f"| {label} | {got} | {verdict(svc.p99_ms <= ref.p99_ms and carried)} |"


def targets_table(bench: list[Summary], peers: list[Summary]) -> str:
    """Issue 26's targets, then the earlier ones against MLServer."""
    rows = ["| target | measured (median; each run) | verdict |", "|---|---|---|"]
    rows.append(_ratio_row(bench, "hits", "service", "ceiling", 2, "requests/s"))
    rows.append(_ratio_row(bench, "misses", "service", "ceiling", 1.5, "requests/s"))
    rows.append(_ratio_row(bench, "batch100-half-repeated", "service", "ceiling", 1.0, "rows/s"))
    rows.append(_p99_vs_row(bench, "fixed-1000rps-hits", "ceiling", 1000))
    rows.append(_p99_vs_row(bench, "fixed-1000rps-misses", "ceiling", 1000))
    rows.append(_spread_row(bench))
    rows.append(_ratio_row(peers, "hits", "service", "MLServer", 2, "requests/s"))
    rows.append(_ratio_row(peers, "misses", "service", "MLServer", 15, "requests/s"))
    return "\n".join(rows)


def _spread_row(summaries: list[Summary], goal: float = 0.10) -> str:
    """The service's largest spread between fresh processes over the throughput scenarios."""
    spreads = [(s.spread, s.scenario) for s in summaries if s.target == "service" and "fixed" not in s.scenario]
    spreads = [(x, name) for x, name in spreads if x == x]
    label = f"service throughput spread between fresh processes < {goal:.0%}"
    if not spreads:
        return f"| {label} | | not measured |"
    worst = max(spreads)
    each = ", ".join(f"{name} {x:.0%}" for x, name in spreads)
    return f"| {label} | {each} | {verdict(worst[0] < goal)} |"


def context_table(result: dict[str, Any], summaries: list[Summary]) -> str:
    """The earlier issue's targets that are still worth watching."""
    rows = ["| earlier target | measured | verdict |", "|---|---|---|"]
    one, thousand = inference_us(result.get("inference", ""), 1), inference_us(result.get("inference", ""), 1000)
    rows.append(f"| model inference, 1 row: <= 100 µs | {one if one is not None else '?'} µs | {verdict(None if one is None else one <= 100)} |")  # fmt: skip
    rows.append(f"| model inference, 1,000 rows: <= 2 ms | {thousand if thousand is not None else '?'} µs | {verdict(None if thousand is None else thousand <= 2000)} |")  # fmt: skip
    rss = max((s.rss_mb for s in summaries if s.target == "service"), default=float("nan"))
    rows.append(f"| service resident memory <= 250 MB at full load | {rss:.0f} MB (largest after any run) | {verdict(rss <= 250)} |")  # fmt: skip
    ready = [r["ready_s"] for r in result["runs"] if r["target"] == "service"]
    if ready:
        rows.append(f"| ready to serve <= 3 s after start | {min(ready):.2f} to {max(ready):.2f} s | {verdict(max(ready) <= 3)} |")  # fmt: skip
    return "\n".join(rows)


def inference_us(text: str, rows: int) -> float | None:
    """The fast path's median µs per call for `rows` rows, from bench/inference.py's table."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == str(rows):
            return float(parts[2])
    return None


# -- the profile -------------------------------------------------------------------------------
_LINE = re.compile(r":\d+\)$")
INCLUSIVE_PACKAGES = ("housing_api", "redis", "orjson", "numpy")
"""The inclusive table lists these only: the framework's frames are on every stack and say little."""


def _frame(text: str) -> str:
    """'send (redis/asyncio/client.py:123)' -> 'send (redis/asyncio/client.py)'; paths trimmed to the package."""
    text = _LINE.sub(")", text)
    return re.sub(r"\(.*?(site-packages|lib/python3\.\d+)/", "(", text)


def _package(frame: str) -> str:
    inside = frame[frame.rfind("(") + 1 : -1]
    top = inside.split("/", 1)[0]
    return top.removesuffix(".py") if "/" in inside or inside.endswith(".py") else inside or "?"


def summarise_profile(raw: str, top: int = 15) -> dict[str, Any]:
    """py-spy's collapsed stacks -> where the samples are: by package (leaf) and by function."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if not f.startswith(("process ", "thread ("))]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for f in set(frames):
            if _package(f) in INCLUSIVE_PACKAGES:
                total[f] += count
    return {
        "samples": samples,
        "packages": packages.most_common(top),
        "self": own.most_common(top),
        "total": total.most_common(top),
    }


def profile_section(profile: dict[str, Any] | None) -> str:
    if not profile or not profile["samples"]:
        return "Not recorded in this run (`bench/run.py --profile`)."
    n = profile["samples"]

    def table(title: str, items: list[tuple[str, int]]) -> str:
        lines = [f"| {title} | % of samples |", "|---|---:|"]
        lines += [f"| `{name}` | {count / n:.1%} |" for name, count in items]
        return "\n".join(lines)

    return "\n\n".join([
        f"{n:,} samples of the service's threads while it was busy (idle time, the event loop waiting "
        "in epoll, is not sampled).",
        table("package of the innermost frame (self time)", profile["packages"]),
        table("function (self time)", profile["self"]),
        table("function of housing_api or redis (inclusive: on the stack)", profile["total"]),
    ])  # fmt: skip


# -- the document ------------------------------------------------------------------------------
def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _kept_notes(doc: Path) -> str:
    text = doc.read_text() if doc.exists() else ""
    start, end = text.find(NOTES_START), text.find(NOTES_END)
    if start < 0 or end < start:
        return f"{NOTES_START}\n{NOTES_END}"
    return text[start : end + len(NOTES_END)]


def _conditions(result: dict[str, Any], command: str) -> str:
    return (
        f"`{command}` at commit {result.get('commit', '?')}: {result.get('processes', 1)} fresh processes of every server "
        f"per scenario, {result['rounds']} rounds on each, each run {result['duration']} (wrk) or {result['k6_duration']} (k6); "
        f"{_pinned(result)}"
        f"{result.get('elapsed_s', 0) / 60:.0f} minutes in all; "
        f"started {result['started']['time']} (`uptime`: {result['started']['uptime']}), "
        f"finished {result['finished']['time']} (`uptime`: {result['finished']['uptime']})."
    )


def _pinned(result: dict[str, Any]) -> str:
    cpu = result.get("pin_server")
    return "" if cpu is None else f"every server pinned to CPU {cpu} (`--pin-server`); "


def render(bench: dict[str, Any] | None, peers: dict[str, Any] | None, notes: str) -> str:
    b = medians(bench) if bench else []
    p = medians(peers) if peers else []
    info = bench or peers or {}
    parts = [
        "# Benchmarks",
        "Produced by `make bench` (the service against the ceiling app) and `make bench-peers` (the same "
        "wrk scenarios against Seldon MLServer), each one run of `bench/run.py`; `bench/bench_report.py` renders "
        "this file from their JSON (`build/bench.json`, `build/bench-peers.json`).",
        f"Machine: {info.get('machine', '?')}, Python {info.get('python', '?')}, {info.get('wrk', 'wrk')}, "
        f"{info.get('k6', 'k6')}. A small virtual machine, which may be shared with other work: the load "
        "average below comes from `uptime` at the start and end of each run, and each run's own load is in "
        "the JSON. Every scenario runs each server in turn, then in the opposite order, and the numbers are "
        "medians, so load from elsewhere falls on both sides of each ratio; compare ratios within a run "
        "rather than absolute numbers across runs.",
        ("- " + _conditions(bench, "make bench")) if bench else "- `make bench`: not run yet.",
        ("- " + _conditions(peers, "make bench-peers") + f" {peers.get('mlserver', 'MLServer')}.")
        if peers
        else "- `make bench-peers`: not run yet.",
        "**Load generators.** Throughput scenarios use wrk (one thread, `bench/wrk/predict.lua` builds the "
        "POST bodies; a C load generator takes a fraction of a core). The fixed-rate scenarios use k6's "
        "open-loop `constant-arrival-rate` executor (`bench/k6/bench.js`), which wrk does not have. wrk, k6 "
        "and redis-server are pinned to the last CPU (`taskset`); the server under test has the other to itself.",
        "The **ceiling app** (`bench/ceiling_app.py`) validates the same request body with the same schema, "
        "runs the same prometheus-fastapi-instrumentator middleware on the same server settings (uvicorn, "
        "uvloop, httptools, one process), and returns a constant: no real service on this stack can beat it.",
        "## Targets",
        targets_table(b, p),
        notes,
        "## `make bench`: the service against the ceiling app",
        "Scenarios: **hits** (one row per request, every row warmed; 32 connections), **misses** (one row "
        "never sent before per request; Redis on; 32 connections), **batch100-half-repeated** (100 rows per "
        "request, the even positions warmed, the odd ones new; 8 connections), **fixed-1000rps-*** (k6 at a "
        "fixed 1,000 requests/s: latency at a known load). Ablations (wrk scenarios only): cross-request "
        "micro-batching off (`MICRO_BATCHING=false`) and the in-process tier off (`MEMORY_CACHE_ROWS=0`). "
        "RSS is the server's resident memory after the run (largest over the runs); failed is the largest "
        "share over the runs.",
        runs_table(b) if b else "Not run yet.",
        context_table(bench, b) if bench else "",
        "## `make bench-peers`: the service against Seldon MLServer",
        "MLServer (`mlserver` and `mlserver-sklearn` from PyPI in `build/mlserver-venv`) serves the same "
        "`model/model.joblib` through the V2 inference protocol (`POST /v2/models/housing/infer`, an FP64 "
        "tensor of shape [rows, 8]) in one process (`parallel_workers: 0`) with its response cache on "
        "(`cache_enabled`, 100,000 entries). Its cache keys on the whole request, so a batch with half its "
        "rows repeated is a miss there. Same wrk scenarios, same rows, same alternation; the ceiling app "
        "runs again for scale.",
        runs_table(p, "MLServer") if p else "Not run yet.",
        "## Where the time goes: the batch scenario under py-spy",
        "`py-spy record --format raw` attached to the service while wrk ran batch100-half-repeated "
        "(a separate run, not one of the measured ones: sampling costs CPU).",
        profile_section(bench.get("profile") if bench else None),
    ]
    if bench and bench.get("inference"):
        parts += ["## Model inference (`bench/inference.py`)", "```\n" + bench["inference"].strip() + "\n```"]
    return "\n\n".join(part for part in parts if part) + "\n"


def write(doc: Path, bench_json: Path, peers_json: Path) -> None:
    doc.write_text(render(_load(bench_json), _load(peers_json), _kept_notes(doc)))
