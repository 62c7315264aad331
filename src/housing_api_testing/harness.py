"""Real processes for tests, benchmarks and load tests: free ports, redis-server, the service.

One place starts them, so every caller gets the same bounded waits and the same clean stop:
tests (through conftest's fixtures), bench/, loadtest/ and scripts/ import this module
(`from housing_api_testing import harness`). Nothing here knows about pytest: a missing binary raises
`Unavailable`, which the test fixtures turn into a skip and the scripts into an exit message.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]  # the checkout: src/housing_api_testing/harness.py
REDIS_INSTALL = "apt-get update && apt-get install -y redis-server"
SENTINEL_INSTALL = "apt-get update && apt-get install -y redis-sentinel redis-tools"
EXPORTER_INSTALL = "apt-get update && apt-get install -y prometheus-redis-exporter"


class Unavailable(RuntimeError):
    """A program the harness needs is not installed; the message says how to install it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and exists too."""
    import random

    for _ in range(200):
        port = random.randint(20_000, 55_000)
        try:
            for p in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def wait_until(ready: Callable[[], bool], timeout_s: float = 5.0, interval_s: float = 0.02) -> bool:
    """Poll `ready` until it is true or the bound passes; a transport error counts as not yet."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ready():
                return True
        except (httpx.TransportError, OSError):
            pass
        time.sleep(interval_s)
    return False


class Proc:
    """A child process with a bounded stop: SIGTERM, then SIGKILL after `timeout_s`."""

    def __init__(self, argv: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 log: Path | None = None) -> None:  # fmt: skip
        self.argv = argv
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def spawn(self) -> None:
        out: Any = subprocess.DEVNULL
        if self.log is not None:
            self._log_file = out = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Exit code of a clean stop; None when it had to be killed (or never ran)."""
        if self.proc is None:
            return None
        code: int | None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            code = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log and self.log.exists() else ""


class RedisServer(Proc):
    """A redis-server child process on a free loopback port, configured as a cache."""

    def __init__(self, tmp: Path, *extra: str, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise Unavailable(f"redis-server is not installed; install it with: {REDIS_INSTALL}")
        self.port = port or free_port()
        self.dir = tmp
        super().__init__([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", str(tmp), "--protected-mode", "no", *extra])  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0, password: str | None = None, username: str | None = None) -> RedisServer:
        import redis

        self.password, self.username = password, username
        self.spawn()
        client = redis.Redis(port=self.port, socket_timeout=0.2, username=username, password=password)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:  # not listening yet (a busy machine)
                return False

        try:
            if not wait_until(answers, timeout_s):
                self.stop()
                raise RuntimeError("redis-server did not start")
        finally:
            client.close()
        return self

    def client(self) -> Any:
        import redis

        username: str | None = getattr(self, "username", None)  # set by start()
        password: str | None = getattr(self, "password", None)
        return redis.Redis(port=self.port, socket_timeout=2, username=username, password=password)


def redis_binary(name: str, install: str) -> str:
    """redis-sentinel or redis-cli; as root with apt-get, Debian's packages are installed when missing."""
    found = shutil.which(name)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        quiet = install.replace("apt-get ", "apt-get -qq ")
        subprocess.run(["sh", "-c", quiet], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                       capture_output=True, timeout=300)  # fmt: skip
        found = shutil.which(name)
    if found is None:
        raise Unavailable(f"{name} is not installed; install it with: {install}")
    return found


class RedisSentinel(Proc):
    """A redis-sentinel child process on a free loopback port, watching one master under `name`,
    quick to act: the master is down after `down_after_ms` without an answer."""

    def __init__(self, tmp: Path, name: str, master_port: int, down_after_ms: int = 400,
                 password: str | None = None, username: str | None = None) -> None:  # fmt: skip
        binary = redis_binary("redis-sentinel", SENTINEL_INSTALL)
        self.port = free_port()
        tmp.mkdir(parents=True, exist_ok=True)
        config = tmp / "sentinel.conf"  # sentinel rewrites its config file: one per process
        lines = [f"port {self.port}", "bind 127.0.0.1", "protected-mode no", f"dir {tmp}",
                 f"sentinel monitor {name} 127.0.0.1 {master_port} 2",
                 f"sentinel down-after-milliseconds {name} {down_after_ms}",
                 f"sentinel failover-timeout {name} 3000", f"sentinel parallel-syncs {name} 1"]  # fmt: skip
        if password is not None and username is None:  # the servers' password, and the sentinels' own
            lines += [f"sentinel auth-pass {name} {password}", f"requirepass {password}"]
        elif password is not None:  # ACL users, as .k8s/components/redis-sentinel/configure.sh writes them
            lines += [f"sentinel auth-user {name} sentinel", f"sentinel auth-pass {name} {password}",
                      f"sentinel sentinel-user {username}", f"sentinel sentinel-pass {password}",
                      "user default off", f"user {username} on >{password} allchannels +@all"]  # fmt: skip
        config.write_text("\n".join(lines) + "\n")
        super().__init__([binary, str(config)], log=tmp / "sentinel.log")


class RedisExporter(Proc):
    """Debian's prometheus-redis-exporter watching one redis-server, on a free loopback port."""

    def __init__(self, redis: RedisServer) -> None:
        binary = redis_binary("prometheus-redis-exporter", EXPORTER_INSTALL)
        self.port = free_port()
        super().__init__([binary, "-redis.addr", f"redis://127.0.0.1:{redis.port}",
                          "-web.listen-address", f"127.0.0.1:{self.port}"], log=redis.dir / "exporter.log")  # fmt: skip

    def start(self, timeout_s: float = 10.0) -> RedisExporter:
        self.spawn()
        if not wait_until(lambda: "redis_up 1" in self.metrics(), timeout_s, interval_s=0.1):
            self.stop()
            raise RuntimeError(f"the exporter did not start: {self.output()}")
        return self

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text


class SentinelGroup:
    """Redis Sentinel for real: a master, a replica following it, and three sentinels (quorum 2)."""

    def __init__(self, tmp: Path, name: str = "housing", password: str | None = None,
                 acl: str | None = None, username: str | None = None) -> None:  # fmt: skip
        """`acl` (a users.acl with the users `replica` and `sentinel`, and `username`): ACL users
        instead of one password, as prod's Sentinel group runs."""
        self.name = name
        self.password = password
        self.username = username
        auth: tuple[str, ...] = ("--requirepass", password, "--masterauth", password) if password else ()
        if acl is not None and password is not None:
            (tmp / "users.acl").write_text(acl)
            auth = ("--aclfile", str(tmp / "users.acl"), "--masteruser", "replica", "--masterauth", password)
        self.master = RedisServer(_mkdir(tmp / "master"), *auth)
        self.replica = RedisServer(_mkdir(tmp / "replica"), *auth, "--replicaof", "127.0.0.1", str(self.master.port))
        self.sentinels = [RedisSentinel(tmp / f"sentinel-{i}", name, self.master.port, password=password,
                                        username=username) for i in range(3)]  # fmt: skip

    @property
    def url(self) -> str:
        """REDIS_URL of REDIS_MODE=sentinel: the three sentinels."""
        return "redis://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + "/0"

    def start(self, timeout_s: float = 20.0) -> SentinelGroup:
        self.master.start(password=self.password, username=self.username)
        self.replica.start(password=self.password, username=self.username)
        for sentinel in self.sentinels:
            sentinel.spawn()
        # Ready when every sentinel knows the replica and the two other sentinels.
        if not wait_until(lambda: all(self._settled(s) for s in self.sentinels), timeout_s, interval_s=0.1):
            self.stop()
            raise RuntimeError("the sentinels did not find each other and the replica")
        return self

    def _settled(self, sentinel: RedisSentinel) -> bool:
        state = self.sentinel_client(sentinel).sentinel_master(self.name)
        return bool(state["num-slaves"] >= 1 and state["num-other-sentinels"] >= 2)

    def sentinel_client(self, sentinel: RedisSentinel) -> Any:
        import redis

        return redis.Redis(port=sentinel.port, username=self.username, password=self.password, socket_timeout=0.5)

    def master_port(self) -> int:
        """The master's port as the first sentinel that answers names it."""
        import redis

        for sentinel in self.sentinels:
            try:
                return int(self.sentinel_client(sentinel).sentinel_get_master_addr_by_name(self.name)[1])
            except (OSError, redis.RedisError):  # that one is down: ask the next
                continue
        raise RuntimeError("no sentinel answers")

    def stop(self) -> None:
        for proc in (*self.sentinels, self.replica, self.master):
            proc.stop(timeout_s=5)


class RedisClusterNodes:
    """Redis Cluster for real: `masters` masters with `replicas` replicas each, created by
    `redis-cli --cluster create`, quick to fail over (a node is failing after `node_timeout_ms`)."""

    def __init__(self, tmp: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 500) -> None:
        self.replicas = replicas
        cluster = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                   "--cluster-node-timeout", str(node_timeout_ms), "--cluster-replica-validity-factor", "0",
                   "--maxmemory-policy", "allkeys-lru")  # fmt: skip
        self.nodes = [RedisServer(_mkdir(tmp / f"node-{i}"), *cluster, port=free_cluster_port())
                      for i in range(masters * (1 + replicas))]  # fmt: skip

    @property
    def url(self) -> str:
        """REDIS_URL of REDIS_MODE=cluster: two seed nodes (the rest are discovered)."""
        return "redis://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def start(self, timeout_s: float = 30.0) -> RedisClusterNodes:
        cli = redis_binary("redis-cli", SENTINEL_INSTALL)
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        created = subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
                                  "--cluster-yes"], capture_output=True, text=True, timeout=timeout_s)  # fmt: skip
        if created.returncode != 0 or not wait_until(self.settled, timeout_s, interval_s=0.1):
            self.stop()
            raise RuntimeError(f"the cluster did not form: {created.stdout[-2000:]}{created.stderr[-2000:]}")
        return self

    def settled(self) -> bool:
        """Every live node says cluster_state:ok and knows every other live node."""
        infos = [n.client().cluster("info") for n in self.live()]
        return all(i["cluster_state"] == "ok" and int(i["cluster_known_nodes"]) >= len(infos) for i in infos)

    def live(self) -> list[RedisServer]:
        """The nodes that answer (a node killed a moment ago may not have exited yet)."""
        import redis

        def answers(node: RedisServer) -> bool:
            try:
                return node.alive() and bool(node.client().ping())
            except redis.ConnectionError:
                return False

        return [n for n in self.nodes if answers(n)]

    def masters(self) -> list[RedisServer]:
        """The live masters, as each of them says."""
        return [n for n in self.live() if n.client().info("replication")["role"] == "master"]

    def node_id(self, node: RedisServer) -> str:
        node_id = node.client().cluster("myid")
        return node_id.decode() if isinstance(node_id, bytes) else str(node_id)

    def reshard(self, source: RedisServer, target: RedisServer, slots: int, timeout_s: float = 60) -> None:
        """Move `slots` slots (and their keys) from one master to another, as an operator would."""
        cli = redis_binary("redis-cli", SENTINEL_INSTALL)
        done = subprocess.run(
            [cli, "--cluster", "reshard", f"127.0.0.1:{source.port}", "--cluster-from", self.node_id(source),
             "--cluster-to", self.node_id(target), "--cluster-slots", str(slots), "--cluster-yes",
             "--cluster-pipeline", "100"], capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster reshard failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def stop(self) -> None:
        for node in self.nodes:  # all at once: each takes a moment to shut down
            if node.alive():
                node.signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop(timeout_s=5)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


class ServiceProcess(Proc):
    """`housing-api serve` on a free loopback port (the committed model unless env says otherwise)."""

    def __init__(self, env: Mapping[str, str] | None = None, log: Path | None = None, *args: str,
                 checkout: Path = ROOT) -> None:  # fmt: skip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {"MODEL_PATH": str(checkout / "model" / "model.joblib")}
        argv = [sys.executable, "-m", "housing_api", "serve", "--host", "127.0.0.1", "--port", str(self.port), *args]
        super().__init__(argv, {**base, **(env or {})}, cwd=checkout, log=log)
        self.ready_s = float("nan")

    def start(self, timeout_s: float = 120.0) -> ServiceProcess:
        started = time.monotonic()
        self.spawn()
        try:
            self.wait_ready(timeout_s)
        except RuntimeError:
            self.stop(timeout_s=5)
            raise
        self.ready_s = time.monotonic() - started
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Until /readyz answers 200; an exited process ends the wait at once (RuntimeError)."""
        if not wait_until(lambda: not self.alive() or self.ready(), timeout_s, interval_s=0.05) or not self.alive():
            raise RuntimeError(f"the service {'exited' if not self.alive() else 'was not ready'}: {self.output()}")

    def ready(self) -> bool:
        return httpx.get(self.url + "/readyz", timeout=1).status_code == 200

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def venv_binary(name: str, what: str) -> Path:
    """A console script of the project's own venv (dev group): another one on PATH could be any version."""
    binary = Path(sys.executable).with_name(name)
    if not binary.is_file():
        raise Unavailable(f"{what} is not installed in this environment; install it with: make install")
    return binary


class MotoServer(Proc):
    """moto's server mode (a real S3-compatible HTTP server) on a free loopback port, with one bucket.

    Its credentials are moto's dummy ones; `client_env` is what an S3 client (MLflow's boto3) needs to reach it."""

    def __init__(self, tmp: Path, bucket: str = "models") -> None:
        self.port = free_port()
        self.bucket = bucket
        super().__init__([str(venv_binary("moto_server", "moto")), "-H", "127.0.0.1", "-p", str(self.port)],
                         log=tmp / "moto.log")  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client_env(self) -> dict[str, str]:
        return {"MLFLOW_S3_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip

    def start(self, timeout_s: float = 60.0) -> MotoServer:
        self.spawn()
        if not wait_until(lambda: not self.alive() or httpx.get(self.url, timeout=1).status_code == 200,
                          timeout_s, interval_s=0.1) or not self.alive():  # fmt: skip
            self.stop(timeout_s=5)
            raise RuntimeError(f"moto_server did not start: {self.output()}")
        self.s3().create_bucket(Bucket=self.bucket)
        return self

    def s3(self) -> Any:
        """A boto3 S3 client of this server (for the test's own reads and writes: the attacker's too)."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="testing", aws_secret_access_key="testing",
                            region_name="us-east-1", config=Config(connect_timeout=2, read_timeout=10))  # fmt: skip


class MLflowServer(Proc):
    """An MLflow tracking server with its model registry: a SQLite backend and a free port.

    Artifacts go to a local folder under `tmp`, proxied through the server (mlflow-artifacts:/), or,
    given `s3` (a MotoServer), to its bucket: clients then read and write s3:// themselves with boto3,
    as the fetch image does against a real S3 (they need `client_env`)."""

    def __init__(self, tmp: Path, s3: MotoServer | None = None) -> None:
        self.port = free_port()
        self.artifacts = tmp / "artifacts"
        self.s3 = s3
        store = ["--artifacts-destination", str(self.artifacts)]
        if s3 is not None:
            store = ["--no-serve-artifacts", "--default-artifact-root", f"s3://{s3.bucket}/mlflow"]
        super().__init__(
            [str(venv_binary("mlflow", "MLflow")), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", *store],
            {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", **(s3.client_env if s3 else {})},
            cwd=tmp, log=tmp / "mlflow.log",
        )  # fmt: skip

    @property
    def client_env(self) -> dict[str, str]:
        """What a client of this server needs: its URL, and the artifact store's endpoint and credentials."""
        return {"MLFLOW_TRACKING_URI": self.url, **(self.s3.client_env if self.s3 else {})}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 240.0) -> MLflowServer:
        # The first start creates the database schema (alembic migrations): tens of seconds on a busy machine.
        self.spawn()
        if not wait_until(lambda: not self.alive() or httpx.get(self.url + "/health", timeout=2).status_code == 200,
                          timeout_s, interval_s=0.25) or not self.alive():  # fmt: skip
            self.stop(timeout_s=10)
            raise RuntimeError(f"the MLflow server did not start: {self.output()}")
        return self


# --- podman containers (issue 16: the image, built and run for real) ----------------------------


def podman_env(build: bool = True) -> dict[str, str]:
    """The environment podman needs here (CONTAINERS_CONF: runc, ulimits), from scripts/debian-base.sh,
    which installs podman when root and bootstraps the local Debian base (`build`) when podman lacks it.
    Raises Unavailable, with the script's one-line reason, where podman cannot run."""
    script = ROOT / "scripts" / "debian-base.sh"
    result = subprocess.run([str(script), *([] if build else ["--env"])], capture_output=True, text=True)
    if result.returncode == 3 or (not build and shutil.which("podman") is None):
        why = result.stderr.strip().splitlines()
        raise Unavailable(why[-1] if why else "podman is not installed (scripts/debian-base.sh installs it as root)")
    if result.returncode != 0:
        raise RuntimeError(f"scripts/debian-base.sh failed:\n{result.stderr[-3000:]}")
    env = dict(os.environ)
    for line in result.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return env


class Container:
    """A detached podman container of the service image, published on a free loopback port.

    Not started with --rm: its exit code and logs are read after it stops, then it is removed."""

    def __init__(self, image: str, env: Mapping[str, str], *run_args: str, port: int = 8000) -> None:
        self.podman_env = dict(env)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = ["podman", "run", "-d", "-p", f"127.0.0.1:{self.port}:{port}", *run_args, image]
        self.id = ""

    def podman(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], env=self.podman_env, capture_output=True, text=True, timeout=timeout_s)

    def start(self) -> Container:
        result = subprocess.run(self.argv, env=self.podman_env, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"podman run failed: {result.stderr[-2000:]}")
        self.id = result.stdout.strip().splitlines()[-1]
        return self

    def ready(self) -> bool:
        return httpx.get(self.url + "/readyz", timeout=1).status_code == 200

    def running(self) -> bool:
        return self.podman("inspect", "--format", "{{.State.Running}}", self.id).stdout.strip() == "true"

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.podman("exec", self.id, *argv)

    def wait(self, timeout_s: float = 60) -> int:
        """Exit code once the container has stopped."""
        return int(self.podman("wait", self.id, timeout_s=timeout_s).stdout.strip().splitlines()[-1])

    def logs(self) -> str:
        result = self.podman("logs", self.id)
        return (result.stdout + result.stderr)[-4000:]

    def stop(self, timeout_s: int = 30) -> int:
        """SIGTERM, SIGKILL after timeout_s (what `podman stop` does); the exit code."""
        self.podman("stop", "-t", str(timeout_s), self.id, timeout_s=timeout_s + 30)
        return self.wait()

    def remove(self) -> None:
        if self.id:
            self.podman("rm", "-f", "-t", "0", self.id)


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` on a /metrics page whose labels include `labels` (0 when
    there are none): whatever other labels a sample carries (model_version on every service sample)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
