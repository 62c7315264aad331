"""A model release as Flagger runs it, on real processes: the rollout test and `make rollout-demo`.

One MLflow registry whose artifact store is S3 (moto's server), three registered versions; one
Redis; a primary serving the stable version and four canaries, each a real `housing-api serve`
process with its version fetched by `housing-api fetch-model`; one Prometheus scraping all of them
every second with the namespace and pod labels the PodMonitor gives in the cluster; one short
weighted load. Then every templated check of the rendered prod Canary runs on that Prometheus as
Flagger runs it (canary_analysis.py) and each canary gets its decision.

Each canary stands for a release of its own, so each is the target of its own Canary: the sound
one is a pod of the rendered targetRef (housing-api-<rs>-<id>, `{{ target }}` = housing-api);
the bad ones are pods of Deployments named housing-api-<fault>, which the template's anchored pod
regex keeps apart from housing-api's pods and from the primary's (housing-api-primary-<rs>-<id>).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from housing_api import FEATURES
from housing_api_testing.canary_analysis import Check, checks, decision, render_prod
from housing_api_testing.harness import (
    ROOT,
    MLflowServer,
    MotoServer,
    RedisServer,
    ServiceProcess,
    free_port,
    wait_until,
)
from housing_api_testing.prom import Prometheus, load_dashboard, prometheus_binary, queries, render

DATA = ROOT.parent / "shared" / "data" / "sklearn"
NAMESPACE = "housing-api"
PRIMARY_POD = "housing-api-primary-5d8c7f9b6-k2p4x"
POOL_ROWS = 1500
LOAD_S = 20.0
CANARY_SHARE = 10
"""The primary gets this many requests for each one a canary gets: a 10 % step (90/10)."""
ROWS_PER_REQUEST = 4
# max_iter of each registered version: the stable one; a retrain with more trees (a different but
# sound version); one with so few trees that it predicts close to the mean (a model that "works"
# and answers differently).
STABLE_TREES, SOUND_TREES, DIFFERENT_TREES = 60, 80, 2


@dataclass(frozen=True)
class Canary:
    """One simulated release: which registered version, which fault, which decision is right."""

    name: str
    target: str
    """Flagger's {{ target }}: the Deployment this canary's pod belongs to."""
    version: str
    """Which registered version it serves: "sound" or "different"."""
    fault: str | None
    expected: str

    @property
    def pod(self) -> str:
        return f"{self.target}-7c{len(self.name)}f9d8b-{self.name[:3]}x9"


CANARIES = (
    Canary("sound", "housing-api", "sound", None, "promote"),
    Canary("errors", "housing-api-errors", "sound", "errors", "rollback"),
    Canary("slow", "housing-api-slow", "sound", "slow", "rollback"),
    Canary("drift", "housing-api-drift", "different", None, "rollback"),
)


class LabelledPrometheus(Prometheus):
    """Prometheus whose static targets carry the labels the Prometheus Operator's PodMonitor gives."""

    def __init__(self, binary: str, workdir: Path, pods: dict[str, str]) -> None:
        super().__init__(binary, workdir, list(pods))
        self.pods = pods

    def config(self) -> str:
        configs = [{"targets": [t], "labels": {"namespace": NAMESPACE, "pod": pod}} for t, pod in self.pods.items()]
        return json.dumps(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [{"job_name": self.job, "static_configs": configs}],
            }
        )


@dataclass
class Versions:
    """The registered versions: registry number and digest by role."""

    number: dict[str, str] = field(default_factory=dict)
    digest: dict[str, str] = field(default_factory=dict)
    path: dict[str, Path] = field(default_factory=dict)


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` for the block (MLflow's client and boto3 read their settings there)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def pool(n: int = POOL_ROWS, seed: int = 25) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    values = rng.uniform([0.5, 1, 1, 0.5, 10, 1, 33, -124], [15, 52, 10, 2, 5000, 6, 42, -114], size=(n, 8))
    return [dict(zip(FEATURES, map(float, row), strict=True)) for row in values.round(4)]


def fetch_model(mlflow: MLflowServer, number: str, store: Path, **env: str) -> subprocess.Popen[str]:
    """`housing-api fetch-model`, as the init container runs it (started now, awaited by finished())."""
    uri = f"models:/housing/{number}"
    return subprocess.Popen(
        [sys.executable, "-m", "housing_api", "fetch-model", "--uri", uri, "--store", str(store)],
        env={**os.environ, **mlflow.client_env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finished(process: subprocess.Popen[str], timeout_s: float = 180) -> tuple[int, str]:
    """Exit code and output (stdout and stderr) of a fetch-model started by fetch_model()."""
    try:
        out, err = process.communicate(timeout=timeout_s)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out + err


class Rollout:
    """Everything of the scenario, started by start() and stopped by stop() (whatever started)."""

    def __init__(self, tmp: Path, kubectl: str) -> None:
        self.tmp = tmp
        self.kubectl = kubectl
        self.procs: list[Any] = []
        self.versions = Versions()
        self.services: dict[str, ServiceProcess] = {}
        self.results: dict[str, list[Check]] = {}
        self.counts: dict[str, dict[int, int]] = {}
        """Status codes the load got, per process."""
        self.fetched: dict[str, tuple[int, str]] = {}
        """fetch-model's exit code and output: stable, tampered, unreachable."""
        self.tampered_key = ""
        self.dead_s3 = ""
        self.decisions: dict[str, str] = {}
        self.panels: dict[str, list[dict[str, Any]]] = {}
        self.log: list[str] = []
        self.started = time.monotonic()

    def say(self, line: str) -> None:
        self.log.append(f"[{time.monotonic() - self.started:5.1f} s] {line}")

    def run(self, load_s: float = LOAD_S) -> None:
        """The whole scenario: register, fetch, start, load, then analyse at once (the checks' windows
        must hold the load)."""
        self.start_registry()
        self.register_versions()
        self.fetch_versions()
        self.start_fleet()
        rows = pool()
        self.warm_stable(rows)
        self.counts = self.load(rows, load_s)
        self.say("load: " + ", ".join(f"{name} {dict(sorted(c.items()))}" for name, c in self.counts.items()))
        self.wait_scraped()
        self.decisions = self.analyse()
        self.panels = self.per_version_panels()

    # --- the registry, on S3 ------------------------------------------------------------------

    def start_registry(self) -> None:
        self.moto = self._started(MotoServer(self._dir("moto")))
        self.mlflow = self._started(MLflowServer(self._dir("mlflow"), s3=self.moto))
        self.say(f"MLflow at {self.mlflow.url}, artifacts in moto's S3 at {self.moto.url}")

    def register_versions(self) -> None:
        """Three quick versions trained here and registered in the S3-backed registry, and a fourth
        registered from the sound version's files whose forest file is then changed in the bucket."""
        from housing_api.registry import Registry
        from housing_api.train import register, train

        trees = {"stable": STABLE_TREES, "sound": SOUND_TREES, "different": DIFFERENT_TREES}
        with environ({**self.mlflow.client_env, "SCIKIT_LEARN_DATA": str(DATA)}):
            registry = Registry(self.mlflow.url)
            for role, n in trees.items():
                out = self._dir(f"trained-{role}") / "model.joblib"
                result = train(out, max_iter=n)
                self.versions.number[role] = register(registry, out, result, "housing").version
            tampered = register(registry, out.parent.parent / "trained-sound" / "model.joblib", result, "housing")
        self.versions.number["tampered"] = tampered.version
        self.tampered_key = self._tamper(tampered.run_id)
        listed = (f"{role} = models:/housing/{n}" for role, n in self.versions.number.items())
        self.say(f"registered in MLflow (artifacts in s3://{self.moto.bucket}): " + ", ".join(listed))

    def _tamper(self, run_id: str) -> str:
        """Flip one bit of a version's forest file in the bucket, as someone with write access could."""
        s3, bucket = self.moto.s3(), self.moto.bucket
        key = next(k["Key"] for k in s3.list_objects_v2(Bucket=bucket)["Contents"]
                   if f"/{run_id}/" in k["Key"] and k["Key"].endswith("/model.forest.npz"))  # fmt: skip
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.put_object(Bucket=bucket, Key=key, Body=body[:-1] + bytes([body[-1] ^ 1]))
        return str(key)

    def fetch_versions(self) -> None:
        """`housing-api fetch-model` from S3, as the init container runs it, for the stable version,
        the tampered one and (S3 unreachable) the sound one, all at once; the other two versions
        through the same code in this process (it has imported MLflow already: a subprocess each
        would cost tens of seconds on a busy machine). Every fetch verifies what it downloaded."""
        from housing_api.model import verify_artifact
        from housing_api.registry import Registry, parse_ref

        store, number = self._dir("store"), self.versions.number
        dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        started = {
            "stable": fetch_model(self.mlflow, number["stable"], store),
            "tampered": fetch_model(self.mlflow, number["tampered"], self._dir("store-tampered")),
            "unreachable": fetch_model(self.mlflow, number["sound"], self._dir("store-unreachable"),
                                       MLFLOW_S3_ENDPOINT_URL=dead),
        }  # fmt: skip
        with environ(self.mlflow.client_env):
            registry = Registry(self.mlflow.url)
            for role in ("sound", "different"):
                source = registry.fetch(parse_ref(f"models:/housing/{number[role]}"), store)
                verify_artifact(source.path, source.registry)
        self.fetched = {name: finished(process) for name, process in started.items()}
        self.dead_s3 = dead
        code, output = self.fetched["stable"]
        if code != 0:
            raise RuntimeError(f"fetch-model of the stable version failed: {output[-2000:]}")
        for role in ("stable", "sound", "different"):
            path = store / "housing" / number[role] / "model.joblib"
            self.versions.digest[role] = json.loads(path.with_suffix(".json").read_text())["version"]
            self.versions.path[role] = path
        for name, (code, output) in self.fetched.items():
            self.say(f"fetch-model ({name}): exit {code}: {output.strip().splitlines()[-1]}")

    # --- the fleet ----------------------------------------------------------------------------

    def start_fleet(self) -> None:
        self.redis = self._started(RedisServer(self._dir("redis")))
        common = {"REDIS_URL": self.redis.url, "LOG_FORMAT": "text", "OMP_NUM_THREADS": "1"}
        self.services["primary"] = self._service("primary", {**common, "MODEL_PATH": str(self.versions.path["stable"])})
        for canary in CANARIES:
            env = {**common, "MODEL_PATH": str(self.versions.path[canary.version]),
                   "STABLE_MODEL_VERSION": self.versions.digest["stable"], "DRIFT_SAMPLE": "1"}  # fmt: skip
            if canary.fault:
                env["ROLLOUT_FAULT"] = canary.fault
            self.services[canary.name] = self._service(canary.name, env, faulty=canary.fault is not None)
        for service in self.services.values():
            service.wait_ready(120)
        pods = {f"127.0.0.1:{self.services['primary'].port}": PRIMARY_POD}
        pods |= {f"127.0.0.1:{self.services[c.name].port}": c.pod for c in CANARIES}
        self.prometheus = LabelledPrometheus(prometheus_binary(), self._dir("prometheus"), pods).start()
        self.procs.append(self.prometheus)
        if not self.prometheus.wait_for_targets(60):
            raise RuntimeError("Prometheus did not scrape every pod")
        self.say(f"fleet up: {', '.join(pods.values())} (namespace {NAMESPACE}), scraped every second")

    def _service(self, name: str, env: dict[str, str], faulty: bool = False) -> ServiceProcess:
        service = ServiceProcess(env, self.tmp / f"{name}.log")
        if faulty:  # the same `serve` command line, through the fault-injecting wrapper
            service.argv = [sys.executable, str(Path(__file__).with_name("rollout_serve.py")), *service.argv[3:]]
        service.spawn()
        self.procs.append(service)
        return service

    # --- the load -----------------------------------------------------------------------------

    def warm_stable(self, rows: list[dict[str, float]]) -> None:
        """The stable version has answered every row of the pool, and Redis holds its answers: what
        a primary that served the traffic before the release has (the drift reads them)."""
        primary = self.services["primary"]
        for start in range(0, len(rows), 500):
            answer = httpx.post(primary.url + "/predict", json=rows[start : start + 500], timeout=60)
            answer.raise_for_status()
        client = self.redis.client()
        if not wait_until(lambda: client.dbsize() >= len(rows), 20, interval_s=0.1):
            raise RuntimeError(f"Redis holds {client.dbsize()} of the stable version's {len(rows)} rows")

    def load(self, rows: list[dict[str, float]], seconds: float = LOAD_S) -> dict[str, dict[int, int]]:
        """Rounds of CANARY_SHARE requests to the primary, then one to each canary at once, for
        `seconds`; each request a few rows drawn from the pool. Status counts per process (0: the
        connection failed, which a machine stalled past the keep-alive timeout can cause; the
        checks read what the processes served, from Prometheus, not what the client saw)."""
        rng = np.random.default_rng(7)
        counts: dict[str, dict[int, int]] = {name: {} for name in self.services}
        lock = threading.Lock()
        clients = {name: httpx.Client(base_url=s.url, timeout=10) for name, s in self.services.items()}

        def send(name: str) -> None:
            with lock:  # numpy's generators are not thread-safe
                drawn = rng.integers(0, len(rows), ROWS_PER_REQUEST)
            batch = [rows[i] for i in drawn]
            try:
                status = clients[name].post("/predict", json=batch).status_code
            except httpx.TransportError:
                status = 0
            with lock:
                counts[name][status] = counts[name].get(status, 0) + 1

        deadline = time.monotonic() + seconds
        with ThreadPoolExecutor(len(CANARIES)) as pool_:
            while time.monotonic() < deadline:
                for _ in range(CANARY_SHARE):
                    send("primary")
                list(pool_.map(send, [c.name for c in CANARIES]))
        for client in clients.values():
            client.close()
        return counts

    def wait_scraped(self) -> None:
        """Two more scrapes of every pod: the last requests are in Prometheus."""
        time.sleep(2.5)

    # --- the analysis -------------------------------------------------------------------------

    def analyse(self) -> dict[str, str]:
        """Flagger's decision for each canary, from the rendered prod Canary's checks."""
        objects = render_prod(self.kubectl, ROOT)
        decisions = {}
        for canary in CANARIES:
            self.results[canary.name] = list(checks(objects, NAMESPACE, canary.target, self.prometheus.query))
            decisions[canary.name] = decision(self.results[canary.name])
        return decisions

    def per_version_panels(self) -> dict[str, list[dict[str, Any]]]:
        """Every dashboard query that names model_version, rendered for this namespace: its result."""
        variables = {"__rate_interval": "1m", "job": ".+", "namespace": NAMESPACE}
        answers = {}
        for _, target in queries(load_dashboard()):
            expr = target.get("expr", "")
            if "model_version" in expr:
                answers[expr] = self.prometheus.query(render(expr, variables))
        return answers

    def report(self) -> str:
        lines = [*self.log, ""]
        for canary in CANARIES:
            lines.append(f"canary {canary.name} ({canary.pod}, {{{{ target }}}} = {canary.target}): "
                         f"{self.decisions[canary.name].upper()} (expected {canary.expected})")  # fmt: skip
            lines += [f"    {check.describe()}" for check in self.results[canary.name]]
        return "\n".join(lines)

    # --- plumbing -----------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _started(self, proc: Any) -> Any:
        self.procs.append(proc)
        return proc.start()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
