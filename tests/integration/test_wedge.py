"""A request path that can never wedge: poisoned caches, failing and hanging stages, stalled
uploads, deadlines, and a randomized fault schedule. Real redis-server throughout."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import RedisServer, app_client, make_settings, running_app, wait_until
from fastapi import FastAPI
from helpers.faulty_model import FaultyModel, faulty_app, fresh_rows

from housing_api.cache import VALUE_ENCODING
from housing_api.http_cache import ENCODING as HTTP_ENCODING
from housing_api.keys import canonical_row, key_namespace, row_digest
from housing_api.schemas import SAMPLE_BATCH
from housing_api_testing.harness import ServiceProcess, metric_value

pytestmark = pytest.mark.integration

ROW = SAMPLE_BATCH[0]
POISON: list[bytes] = [
    b"abc", b"", b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"1e999", b"-1e999", b"x" * 100_000,
    b'{"prediction": 4.1}', b"[4.1]", b" 4.15", b"4.15\n", b"4_1", b"0x1p2", b"\xff\xfe",
]  # fmt: skip


def row_key(prefix: str, version: str, row: dict[str, Any]) -> str:
    return key_namespace(prefix, version, VALUE_ENCODING) + row_digest(canonical_row(row))


def http_key(prefix: str, version: str, row: dict[str, Any]) -> str:
    return f"{prefix}-http:{version[:16]}:{HTTP_ENCODING}:{row_digest(canonical_row(row))}"


@pytest.fixture(scope="module")
def truth() -> Callable[[dict[str, Any]], float]:
    """What a process without Redis answers for a row."""
    with app_client() as c:

        def predict(row: dict[str, Any]) -> float:
            value: float = c.post("/predict", json=[row]).json()["prediction"][0]
            return value

        yield predict  # type: ignore[misc]


@pytest.fixture
def redis_server(tmp_path: Any) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def metric(app: FastAPI, name: str, **labels: str) -> float:
    return app.state.metrics.registry.get_sample_value(name, labels) or 0.0


# -- nothing from a cache is trusted ----------------------------------------------------------------
@pytest.mark.parametrize("poison", POISON, ids=lambda p: repr(p[:12]))
def test_a_poisoned_row_value_is_a_miss_and_is_overwritten(
    redis_server: RedisServer, truth: Callable[[dict[str, Any]], float], poison: bytes
) -> None:
    settings = make_settings(redis_url=redis_server.url)
    with app_client(**settings.model_dump()) as c:
        key = row_key(settings.cache_prefix, c.app.state.service.model.version, ROW)
        redis_server.client().set(key, poison)
        r = c.post("/predict", json=[ROW])
        assert r.status_code == 200
        assert r.json()["prediction"] == [truth(ROW)]
        assert r.headers["X-Cache"] == "MISS"  # not a HIT on a value nobody can trust
        assert metric(c.app, "housing_api_cache_lookups_total", tier="redis", outcome="invalid") == 1
        assert wait_until(lambda: redis_server.client().get(key) == repr(truth(ROW)).encode())
        # The fixed value is a hit for the next fresh process.
    with app_client(**settings.model_dump()) as again:
        r = again.post("/predict", json=[ROW])
        assert r.headers["X-Cache"] == "HIT" and r.json()["prediction"] == [truth(ROW)]


def test_a_poisoned_row_never_blocks_later_requests(redis_server: RedisServer) -> None:
    """The wedge of the issue: one bad value, then every later Redis-bound request waited forever."""
    settings = make_settings(redis_url=redis_server.url, memory_cache_rows=0, request_timeout_s=2)
    with app_client(**settings.model_dump()) as c:
        redis_server.client().set(row_key(settings.cache_prefix, c.app.state.service.model.version, ROW), b"abc")
        assert c.post("/predict", json=[ROW]).status_code == 200
        for i in range(5):
            r = c.post("/predict", json=[{**ROW, "MedInc": 2 + i}])
            assert r.status_code == 200
        assert c.get("/readyz").status_code == 200
        assert c.app.state.service.inflight == 0 and len(c.app.state.service.resolver.inflight) == 0


GET_POISON: list[bytes] = [
    b"abc", b"", b"null", b"{}", b'{"prediction": [null]}', b"[1, 2]",
    b'{"query_key": "q", "inputs": [{"MedInc": 1}], "prediction": [1.0], "model_version": "x"}',
]  # fmt: skip


@pytest.mark.parametrize("poison", GET_POISON, ids=lambda p: repr(p[:12]))
def test_a_poisoned_get_response_entry_is_a_miss_and_is_replaced(
    redis_server: RedisServer, truth: Callable[[dict[str, Any]], float], poison: bytes
) -> None:
    settings = make_settings(redis_url=redis_server.url)
    with app_client(**settings.model_dump()) as c:
        key = http_key(settings.cache_prefix, c.app.state.service.model.version, ROW)
        redis_server.client().set(key, poison, ex=60)
        r = c.get("/predict", params=ROW)
        assert r.status_code == 200 and r.json()["prediction"] == [truth(ROW)]
        assert metric(c.app, "housing_api_cache_lookups_total", tier="http", outcome="invalid") == 1
        assert wait_until(lambda: redis_server.client().get(key) not in (None, poison))


def test_a_get_entry_for_another_row_is_not_served(redis_server: RedisServer) -> None:
    other = {**ROW, "MedInc": 2.5}
    settings = make_settings(redis_url=redis_server.url)
    with app_client(**settings.model_dump()) as c:
        version = c.app.state.service.model.version
        right = c.get("/predict", params=other).content  # a complete, valid entry, but for `other`
        redis_server.client().set(http_key(settings.cache_prefix, version, ROW), right, ex=60)
    with app_client(**settings.model_dump()) as fresh:
        r = fresh.get("/predict", params=ROW)
        assert r.json()["inputs"][0]["MedInc"] == ROW["MedInc"]


# -- the smaller defects ---------------------------------------------------------------------------
def test_a_get_miss_does_not_wait_for_its_redis_write(redis_server: RedisServer) -> None:
    settings = make_settings(redis_url=redis_server.url)
    with app_client(**settings.model_dump()) as c:
        key = http_key(settings.cache_prefix, c.app.state.service.model.version, ROW)
        redis_server.client().execute_command("CLIENT", "PAUSE", "1000", "WRITE")  # < the write timeout
        r = c.get("/predict", params=ROW)
        # Answered while Redis still refuses writes: the response did not wait for its write.
        assert r.status_code == 200 and redis_server.client().get(key) is None
        assert wait_until(lambda: redis_server.client().get(key) is not None, 10)


def test_a_slow_write_is_not_an_outage(redis_server: RedisServer) -> None:
    settings = make_settings(redis_url=redis_server.url)
    with app_client(**settings.model_dump()) as c:
        resolver = c.app.state.service.resolver
        redis_server.client().execute_command(
            "CLIENT", "PAUSE", str(int(resolver.redis.write_timeout_s * 1000 + 1500)), "WRITE"
        )
        assert c.post("/predict", json=[{**ROW, "MedInc": 3.3}]).status_code == 200
        # The write-behind times out while writes are paused ...
        assert wait_until(lambda: metric(c.app, "housing_api_redis_errors_total", op="set", reason="timeout") >= 1, 10)
        # ... and Redis stays in use for reads.
        assert not resolver.redis.degraded and metric(c.app, "housing_api_redis_up") == 1


def test_http_cache_max_age_zero_turns_the_get_cache_off_per_app(redis_server: RedisServer) -> None:
    for ages in ((60, 0), (0, 60)):  # whichever app starts first, each keeps its own
        first, second = (make_settings(redis_url=redis_server.url, http_cache_max_age=age) for age in ages)
        with app_client(**first.model_dump()) as a, app_client(**second.model_dump()) as b:
            for c, settings in ((a, first), (b, second)):
                c.get("/predict", params=ROW)
                r = c.get("/predict", params=ROW)
                hits = metric(c.app, "housing_api_cache_lookups_total", tier="http", outcome="hit")
                key = http_key(settings.cache_prefix, c.app.state.service.model.version, ROW)
                if settings.http_cache_max_age == 0:
                    assert hits == 0 and "max-age=0" in r.headers["Cache-Control"]
                    time.sleep(0.2)
                    assert redis_server.client().get(key) is None
                else:
                    assert hits == 1 and "max-age=" in r.headers["Cache-Control"]
                    assert wait_until(lambda key=key: redis_server.client().get(key) is not None)


def test_redis_paused_for_reads_costs_a_timeout_not_a_wedge(redis_server: RedisServer) -> None:
    with app_client(redis_url=redis_server.url, redis_timeout_ms=100) as c:
        redis_server.client().execute_command("CLIENT", "PAUSE", "1500", "ALL")
        r = c.post("/predict", json=fresh_rows(4, 6.0))
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
        assert c.app.state.service.resolver.redis.degraded
        assert c.post("/predict", json=fresh_rows(4, 6.5)).status_code == 200


# -- bodies and connections ----------------------------------------------------------------------
def stalled_upload(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    s.sendall(head + b'[{"MedInc":')
    return s


def read_status(s: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data else 0


def test_stalled_uploads_hold_no_prediction_slot_and_get_408(tmp_path: Any) -> None:
    from conftest import Server

    server = Server({"MAX_INFLIGHT_REQUESTS": "4", "BODY_TIMEOUT_S": "2"})
    try:
        server.wait_ready()
        stalled = [stalled_upload(server.port) for _ in range(12)]
        time.sleep(0.3)  # every stalled request has reached the handler
        r = httpx.post(server.url + "/predict", json=SAMPLE_BATCH, timeout=10)
        assert r.status_code == 200 and len(r.json()["prediction"]) == 4
        statuses = [read_status(s) for s in stalled]
        assert statuses == [408] * 12
        for s in stalled:
            s.close()
        metrics = httpx.get(server.url + "/metrics").text
        assert metric_value(metrics, "housing_api_request_timeouts_total", kind="body") == 12
    finally:
        server.stop()


def test_open_connections_are_bounded(tmp_path: Any) -> None:
    from conftest import Server

    server = Server({"LIMIT_CONCURRENCY": "8", "BODY_TIMEOUT_S": "3"})
    try:
        server.wait_ready()
        stalled = [stalled_upload(server.port) for _ in range(8)]
        time.sleep(0.3)
        r = httpx.get(server.url + "/livez", timeout=10)  # refused at once, not queued behind them
        assert r.status_code == 503
        for s in stalled:
            s.close()
        assert wait_until(lambda: httpx.get(server.url + "/livez", timeout=2).status_code == 200, 10)
    finally:
        server.stop()


def scraped_value(url: str, name: str, **labels: str) -> float:
    """One series' value on /metrics (0 when it is not there)."""
    return metric_value(httpx.get(url + "/metrics", timeout=5).text, name, **labels)


def test_a_client_that_hangs_up_mid_upload_is_not_a_5xx_and_is_logged_once(tmp_path: Any) -> None:
    log = tmp_path / "serve.log"
    server = ServiceProcess({}, log).start()
    try:
        for _ in range(5):
            stalled_upload(server.port).close()  # headers and part of the body, then gone
        answered = {"handler": "/predict", "method": "POST"}
        assert wait_until(lambda: scraped_value(server.url, "http_requests_total", **answered) == 5, 10)
        assert scraped_value(server.url, "http_requests_total", **answered, status="5xx") == 0
        assert scraped_value(server.url, "housing_api_client_disconnects_total") == 5
        assert httpx.post(server.url + "/predict", json=SAMPLE_BATCH, timeout=10).status_code == 200
    finally:
        server.stop()
    text = log.read_text()
    assert "Traceback" not in text and "ClientDisconnect" not in text, text[-3000:]
    assert text.count("hung up") == 1, text[-3000:]


# -- a randomized fault schedule -------------------------------------------------------------------
DOCUMENTED = {200, 429, 500, 503}


def record(name: str, values: dict[str, Any]) -> None:
    """Keep a measurement for docs/reliability.md (build/measurements/wedge.json)."""
    import json

    from housing_api_testing.harness import ROOT

    path = ROOT / "build" / "measurements" / "wedge.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    found = json.loads(path.read_text()) if path.exists() else {}
    found[name] = values
    path.write_text(json.dumps(found, indent=1) + "\n")


def test_a_randomized_fault_schedule_never_hangs_a_request(redis_server: RedisServer) -> None:
    timeout_s = 1.0
    rnd = random.Random(20261129)

    async def scenario() -> tuple[list[int], dict[str, float]]:
        app, faults = faulty_app(
            redis_url=redis_server.url, request_timeout_s=timeout_s, memory_cache_rows=200, redis_timeout_ms=100
        )
        async with running_app(app) as c:
            model = faults()
            model.hang_s = 1.5
            version = app.state.service.model.version
            prefix = app.state.settings.cache_prefix
            redis = redis_server.client()
            statuses: list[int] = []
            faults_done: dict[str, int] = {}

            async def client(n: int, seed: int) -> None:
                rnd = random.Random(seed)  # each client's requests are reproducible; interleaving is not
                for _ in range(n):
                    k = rnd.random()
                    medinc = (FaultyModel.RAISE if k < 0.01 else FaultyModel.HANG if k < 0.015
                              else FaultyModel.KILL if k < 0.02 else round(rnd.uniform(1, 3), 2))  # fmt: skip
                    extra = fresh_rows(rnd.randint(0, 5), round(rnd.uniform(1, 3), 2))
                    batch = [{**ROW, "MedInc": medinc}, *extra]
                    get = rnd.random() < 0.2
                    send = c.get("/predict", params=batch[0]) if get else c.post("/predict", json=batch)
                    started = time.perf_counter()
                    r = await asyncio.wait_for(send, timeout_s + 3)  # a hang fails the test here
                    durations.append(time.perf_counter() - started)
                    statuses.append(r.status_code)

            async def chaos(clients_done: asyncio.Event) -> None:
                while not clients_done.is_set():  # faults come and go for the whole run
                    k = rnd.random()
                    row = {**ROW, "MedInc": round(rnd.uniform(1, 3), 2)}
                    if k < 0.4:
                        redis.set(row_key(prefix, version, row), rnd.choice(POISON[:9]))
                        kind = "poisoned row value"
                    elif k < 0.6:
                        redis.set(http_key(prefix, version, row), rnd.choice(GET_POISON), ex=30)
                        kind = "poisoned GET entry"
                    elif k < 0.7:
                        mode = rnd.choice(["ALL", "WRITE"])
                        redis.execute_command("CLIENT", "PAUSE", str(rnd.randint(50, 400)), mode)
                        kind = f"CLIENT PAUSE {mode}"
                    elif k < 0.75:
                        app.state.service.resolver.lookup._task.cancel()
                        kind = "lookup stage killed"
                    else:
                        kind = "quiet"
                    faults_done[kind] = faults_done.get(kind, 0) + 1
                    await asyncio.sleep(rnd.uniform(0.02, 0.15))

            async def clients(clients_done: asyncio.Event) -> None:
                await asyncio.gather(*(client(125, 20261129 + i) for i in range(1, 17)))
                clients_done.set()

            done = asyncio.Event()
            await asyncio.gather(chaos(done), clients(done))
            await asyncio.sleep(0.3)  # let the last restart and write-behind finish
            resolver = app.state.service.resolver
            state = {
                "inflight_rows": len(resolver.inflight),
                "queued": sum(len(s.queue) for s in resolver.stages),
                "admitted": app.state.service.inflight,
                "down": len(resolver.stages_down()),
                "ready": (await c.get("/readyz")).status_code,
                "after": (await c.post("/predict", json=fresh_rows(3, 9.0))).status_code,
            }
            record("randomized_fault_schedule", {
                "requests": len(statuses), "statuses": {str(k): statuses.count(k) for k in sorted(set(statuses))},
                "slowest_s": round(max(durations), 3), "p99_s": round(sorted(durations)[int(len(durations) * 0.99)], 3),
                "request_timeout_s": timeout_s, "faults": faults_done, "after": state,
            })  # fmt: skip
            return statuses, state

    durations: list[float] = []
    statuses, state = asyncio.run(scenario())
    assert len(statuses) == 2000
    assert set(statuses) <= DOCUMENTED, sorted(set(statuses))
    assert statuses.count(200) > 1500  # faults cost the requests they touch, not the service
    assert state == {"inflight_rows": 0, "queued": 0, "admitted": 0, "down": 0, "ready": 200, "after": 200}


# -- shutdown and startup --------------------------------------------------------------------------
def test_shutdown_with_hung_work_ends_within_its_deadline_with_the_documented_code(tmp_path: Any) -> None:
    import signal
    import sys

    from helpers.faulty_serve import HANG_MEDINC

    from housing_api.server import EXIT_SHUTDOWN_TIMEOUT
    from housing_api_testing.harness import ROOT, Proc, free_port

    port = free_port()
    env = {"MODEL_PATH": str(ROOT / "model" / "model.joblib"), "INLINE_PREDICT_ROWS": "0",
           "REQUEST_TIMEOUT_S": "1", "SHUTDOWN_TIMEOUT_S": "4"}  # fmt: skip
    server = Proc([sys.executable, str(ROOT / "tests/helpers/faulty_serve.py"), "serve", "--port", str(port)], env,
                  cwd=ROOT, log=tmp_path / "serve.log")  # fmt: skip
    server.spawn()
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: httpx.get(url + "/readyz", timeout=1).status_code == 200, 60), server.output()
        hung = httpx.post(url + "/predict", json=[{**ROW, "MedInc": HANG_MEDINC}], timeout=10)
        assert hung.status_code == 503  # the request's deadline; the model thread stays hung
        server.signal(signal.SIGTERM)
        # Inside the pod's grace period whatever is hung: the hard deadline, then the documented code.
        assert server.wait(timeout_s=4 + 6) == EXIT_SHUTDOWN_TIMEOUT
        assert "shutdown did not finish within 4 s" in server.output()
    finally:
        server.stop(timeout_s=1)


def test_a_clean_shutdown_still_exits_0(tmp_path: Any) -> None:
    from conftest import Server

    server = Server({"SHUTDOWN_TIMEOUT_S": "10"})
    server.wait_ready()
    assert httpx.post(server.url + "/predict", json=SAMPLE_BATCH).status_code == 200
    assert server.stop() == 0


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAX_BATCH_ROWS": "abc"}, "MAX_BATCH_ROWS=abc"),
        ({"MEMORY_CACHE_ROWS": "-1"}, "MEMORY_CACHE_ROWS=-1"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL=localhost:6379: must start with redis://"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL=verbose: must be one of"),
        ({"REQUEST_TIMEOUT_S": "0"}, "REQUEST_TIMEOUT_S=0"),
        ({"MAX_QUEUED_ROWS": "10"}, "MAX_QUEUED_ROWS (10) must be >= MAX_BATCH_ROWS"),
        ({"LOG_FORMAT": "yaml"}, "LOG_FORMAT=yaml: Input should be 'json' or 'text'"),
        ({"ACCESS_LOG_SAMPLE": "2"}, "ACCESS_LOG_SAMPLE=2"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "otel:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT=otel:4318: must be an http"),
    ],
)
def test_a_bad_setting_stops_startup_with_one_line(env: dict[str, str], named: str) -> None:
    import subprocess
    import sys

    from housing_api_testing.harness import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "housing_api", "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", **env}, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("housing-api: cannot start: ") and named in lines[0]
