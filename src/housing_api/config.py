"""Settings: one class, read once in create_app() / the CLI and passed down."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
RedisMode = Literal["standalone", "sentinel", "cluster"]
DEFAULT_PORTS: dict[str, int] = {"standalone": 6379, "sentinel": 26379, "cluster": 6379}
"""The port of a host that names none in REDIS_URL: Redis's, or Sentinel's for the sentinels."""
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
SECRET_SETTINGS = frozenset({"REDIS_PASSWORD"})
"""Settings whose value is never printed, not even in the error that refuses it."""
REQUEST_TIMEOUT_S_DEFAULT = 5.0
"""The request deadline, stated here only: the code reads it, and the manifests and docs that restate
it (the ConfigMap, the README's table, the gateway's comment, docs/deployment.md) are checked
against it by tests/unit/test_config.py."""
STAGE_DOWN_LIVEZ_S_DEFAULT = 30.0
"""How long a background stage may stay down before /livez fails (tests/unit/test_config.py holds the
liveness probe's window and HousingApiStageDown's `for` to it)."""


class Settings(BaseSettings):
    """Every knob of the service; each field is an environment variable of the same name."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    model_path: Path = Field(Path("model/model.joblib"), description="Model artifact; model.json must sit beside it.")
    model_uri: str | None = Field(
        None,
        description="Where the model comes from, overriding MODEL_PATH: a local model.joblib, or an MLflow registry version models:/<name>/<version> (or models:/<name>@<alias>, for dev).",
    )
    model_store: Path = Field(
        Path(tempfile.gettempdir()) / "housing-api-models",
        description="Folder that registry versions are fetched into (MODEL_STORE/<name>/<version>/), once per version.",
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking server (and model registry) that models:/ references are fetched from."
    )
    redis_url: str | None = Field(
        None,
        description="redis:// or rediss:// URL of the shared cache tier, without credentials (REDIS_USERNAME, REDIS_PASSWORD_FILE); unset = in-process tier only. Sentinel and Cluster name several hosts: redis://h1:26379,h2:26379/0.",
    )
    # One URL says where in every mode: the server, the sentinels, or the cluster's seed nodes. The
    # mode says how to read it, rather than a scheme of our own (redis+sentinel://), because managed
    # Redis hands out plain host:port endpoints and redis-py's clients take exactly these pieces.
    redis_mode: RedisMode = Field(
        "standalone",
        description="standalone (one server), sentinel (REDIS_URL lists the sentinels; the client follows failovers) or cluster (REDIS_URL lists seed nodes; slot-aware).",
    )
    redis_sentinel_master: str | None = Field(
        None, description="REDIS_MODE=sentinel: the master name the sentinels monitor (`sentinel monitor <name> ...`)."
    )
    # The connection surface that every Redis mode reads (one server now; Sentinel and Cluster
    # later): where from the URL, who and how secret from these, each from a Kubernetes Secret.
    redis_username: str | None = Field(
        None, description="Redis ACL user (AUTH username password); unset = default user."
    )
    redis_password: SecretStr | None = Field(
        None,
        description="Redis password; prefer REDIS_PASSWORD_FILE (a mounted Secret), which never enters the environment.",
    )
    redis_password_file: Path | None = Field(
        None, description="File holding the Redis password (a mounted Kubernetes Secret key); trailing newline ignored."
    )
    redis_ca_file: Path | None = Field(
        None, description="PEM CA bundle that a rediss:// server's certificate must chain to (default: the system's)."
    )
    cache_prefix: str = Field("housing", description="Prefix of every Redis key.")
    cache_ttl_seconds: int = Field(3600, ge=1, description="TTL of each cached row in Redis.")
    # Small on purpose: the hot rows stay in-process and Redis, shared by every pod, holds the long
    # tail; a bigger tier costs memory for no throughput (docs/benchmarks.md, "MEMORY_CACHE_ROWS").
    memory_cache_rows: int = Field(10_000, ge=0, description="Rows kept in the in-process LRU tier; 0 disables it.")
    redis_timeout_ms: float = Field(50.0, gt=0, description="Connect and socket timeout for Redis calls.")
    redis_retry_interval_s: float = Field(
        1.0, ge=0, description="After a Redis failure, skip Redis for this long before trying again."
    )
    max_batch_rows: int = Field(1000, ge=1, description="Most rows accepted in one POST /predict.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body; larger bodies get 413.")
    batch_max_rows: int = Field(1024, ge=1, description="Most rows the micro-batcher sends to the model in one call.")
    batch_max_wait_ms: float = Field(
        0.0, ge=0, description="Extra time a micro-batch may wait for more rows (0 = adaptive, never waits when idle)."
    )
    micro_batching: bool = Field(
        True,
        description="Gather rows of concurrent requests into shared Redis round trips and model calls; false = one of each per request (for comparison only).",
    )
    max_inflight_requests: int = Field(
        128,
        ge=1,
        description="Prediction requests admitted at once; more get 429 (about capacity x the latency you accept).",
    )
    max_queued_rows: int = Field(20_000, ge=1, description="Rows allowed to wait for Redis or the model; more get 429.")
    http_cache_max_age: int = Field(60, ge=0, description="Cache-Control max-age of GET /predict responses.")
    log_level: str = Field("info", description="Python log level: debug, info, warning, error or critical.")
    log_format: Literal["json", "text"] = Field(
        "json",
        description="json: one JSON object per line with the request and trace ids (for a log pipeline); text: plain lines for a terminal (make run).",
    )
    access_log_sample: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Share of requests given an access log line (0..1); a 5xx or a request slower than ACCESS_LOG_SLOW_S always gets one.",
    )
    access_log_slow_s: float = Field(
        1.0, gt=0, description="A request that takes at least this long always gets an access log line."
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector (http://host:4318): spans are POSTed to <it>/v1/traces as protobuf; unset = no tracing, and no cost.",
    )
    # One knob for two bounds, on purpose: the request's deadline, and each stage's bound on one batch
    # (batching.py). A batch is never worth waiting for longer than the requests that wait for it, and
    # a separate stage bound could only be shorter (failing batches some request could still use) or
    # longer (holding a stage for rows whose requests have all been answered 503).
    request_timeout_s: float = Field(
        REQUEST_TIMEOUT_S_DEFAULT,
        gt=0,
        le=300,
        description="Longest a request waits for its rows after its body is read; past it: 503 with Retry-After.",
    )
    body_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Longest a client may take to send its request body; past it: 408."
    )
    limit_concurrency: int = Field(
        4096,
        ge=1,
        description="Open connections (idle keep-alive ones included) and requests served at once (bounds file descriptors); past it the server answers 503 at once.",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Longest a client may take to send a request's line and headers (the first from the connect, each later one from its first byte); past it the connection is closed (408 if part of a request arrived).",
    )
    max_header_bytes: int = Field(
        65_536,
        ge=4096,
        description="Largest request line plus headers; larger gets 431 and the connection is closed.",
    )
    # Above every proxy's idle timeout in front of the service (Istio's DestinationRule: 60 s), so the
    # proxy, not the app, closes a pooled connection: the app closing one the proxy is reusing loses
    # the request written on it.
    keepalive_timeout_s: int = Field(
        75,
        ge=1,
        le=3600,
        description="Longest a keep-alive connection may sit idle between requests (or a client leave its answer unread); then it is closed.",
    )
    shutdown_timeout_s: float = Field(
        25.0,
        gt=0,
        le=3600,
        description="Hard bound from SIGTERM to exit, whatever is hung (keep below the pod's grace period minus preStop).",
    )
    # A stage's supervisor restarts it within 50 ms (stages.py); one still down after this long will not
    # come back, and an unready pod that stays alive is a pod short until someone deletes it. Past this
    # /livez answers 503 and the kubelet restarts the pod (after its liveness probe's 3 x 10 s more).
    stage_down_livez_s: float = Field(
        STAGE_DOWN_LIVEZ_S_DEFAULT,
        gt=0,
        le=3600,
        description="Longest a background stage may stay down despite its restarts before /livez fails (503) and the kubelet restarts the pod.",
    )
    inline_predict_rows: int = Field(
        32,
        ge=0,
        description="Batches up to this size run on the event loop when the compiled inference path is active (a thread hop costs more than the prediction).",
    )

    stable_model_version: str = Field(
        "",
        description="Prediction drift: the stable (primary) model's version digest, as /model shows it (64 hex, or at least its first 16); empty, or this process's own version, turns drift off.",
    )
    # 5% by default: at a canary's first step (a few percent of the fleet's traffic) that is still
    # hundreds of compared rows a minute, enough for a histogram quantile, while the extra MGET per
    # batch stays small next to the lookup's own. Only rows the model computes are drawn from.
    drift_sample: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Share of the rows this process's model computes (not cache hits) that are compared with the stable version's cached answer (0..1).",
    )

    @field_validator("stable_model_version")
    @classmethod
    def _a_version_digest(cls, value: str) -> str:
        # The cache keys carry the first 16 hex characters of the version (keys.key_namespace).
        if value and not re.fullmatch(r"[0-9a-f]{16,64}", value):
            raise ValueError("must be a model version digest as /model shows it: 16 to 64 lowercase hex characters")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_has_a_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(REDIS_SCHEMES):
            raise ValueError(f"must start with {', '.join(REDIS_SCHEMES)} (for example redis://127.0.0.1:6379/0)")
        if value and not value.startswith("unix://"):
            try:
                hosts = redis_hosts(value, 6379)
            except ValueError:
                raise ValueError("is not a valid URL (host, port and database: redis://host:6379/0)") from None
            if not all(host for host, _ in hosts):
                raise ValueError("names no host (for example redis://127.0.0.1:6379/0)")
        return value or None

    @model_validator(mode="after")
    def _url_fits_the_mode(self) -> Settings:
        mode, url = self.redis_mode, self.redis_url
        if self.redis_sentinel_master and mode != "sentinel":
            raise ValueError("REDIS_SENTINEL_MASTER is for REDIS_MODE=sentinel only")
        if url is None:
            if mode != "standalone":
                raise ValueError(f"REDIS_MODE={mode} needs REDIS_URL (for example {MODE_EXAMPLES[mode]})")
            return self
        if mode != "standalone" and url.startswith("unix://"):
            raise ValueError(
                f"REDIS_MODE={mode} needs a redis:// or rediss:// REDIS_URL (for example {MODE_EXAMPLES[mode]})"
            )
        if mode == "standalone" and not url.startswith("unix://") and len(redis_hosts(url, 6379)) > 1:
            raise ValueError("REDIS_URL names several hosts: set REDIS_MODE=sentinel or REDIS_MODE=cluster")
        if mode == "sentinel" and not self.redis_sentinel_master:
            raise ValueError("REDIS_MODE=sentinel needs REDIS_SENTINEL_MASTER (the master name the sentinels monitor)")
        if mode == "cluster" and redis_database(url) != 0:
            raise ValueError("REDIS_MODE=cluster has database 0 only: end REDIS_URL with /0 or nothing")
        return self

    def redis_nodes(self) -> list[tuple[str, int]]:
        """The (host, port) pairs of REDIS_URL: the server, the sentinels or the cluster's seed nodes."""
        return redis_hosts(self.redis_url or "", DEFAULT_PORTS[self.redis_mode])

    @model_validator(mode="after")
    def _one_source_per_redis_credential(self) -> Settings:
        url_password = bool(self.redis_url and urlsplit(self.redis_url).password)
        if sum((url_password, self.redis_password is not None, self.redis_password_file is not None)) > 1:
            raise ValueError("set the Redis password once: REDIS_PASSWORD_FILE, REDIS_PASSWORD or REDIS_URL")
        if self.redis_password_file is not None and not self.redis_password_file.is_file():
            raise ValueError(f"REDIS_PASSWORD_FILE {self.redis_password_file} is not a readable file")
        if self.redis_ca_file is not None and not (self.redis_url or "").startswith("rediss://"):
            raise ValueError("REDIS_CA_FILE needs a rediss:// REDIS_URL")
        return self

    def redis_connection(self) -> dict[str, Any]:
        """redis-py keyword arguments for the credentials and TLS settings (the password file is
        read here, once, when the app starts); the same for a single server, Sentinel or Cluster."""
        connection: dict[str, Any] = {}
        if self.redis_username:
            connection["username"] = self.redis_username
        if self.redis_password_file is not None:
            connection["password"] = self.redis_password_file.read_text().rstrip("\r\n")
        elif self.redis_password is not None:
            connection["password"] = self.redis_password.get_secret_value()
        if self.redis_ca_file is not None:
            connection["ssl_ca_certs"] = str(self.redis_ca_file)
        return connection

    @field_validator("otel_exporter_otlp_endpoint")
    @classmethod
    def _otlp_endpoint_is_http(cls, value: str | None) -> str | None:
        if value and not (value.startswith(("http://", "https://")) and urlsplit(value).hostname):
            raise ValueError("must be an http:// or https:// URL (for example http://otel-collector:4318)")
        return value or None

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.lower()

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> Settings:
        # Otherwise a full-size batch could never be admitted and would always get 429.
        if self.max_queued_rows < self.max_batch_rows:
            raise ValueError(
                f"MAX_QUEUED_ROWS ({self.max_queued_rows}) must be >= MAX_BATCH_ROWS ({self.max_batch_rows})"
            )
        return self


MODE_EXAMPLES: dict[str, str] = {
    "standalone": "redis://redis:6379/0",
    "sentinel": "redis://sentinel-0:26379,sentinel-1:26379,sentinel-2:26379/0",
    "cluster": "redis://redis-0:6379,redis-1:6379,redis-2:6379",
}


def redis_hosts(url: str, default_port: int) -> list[tuple[str, int]]:
    """(host, port) of each comma-separated host of a redis:// URL's authority, credentials dropped;
    ValueError for a port that is not a number. `[::1]:6379` keeps its brackets off."""
    authority = urlsplit(url).netloc.rsplit("@", 1)[-1]
    hosts = []
    for part in authority.split(","):
        parsed = urlsplit(f"//{part.strip()}")
        hosts.append((parsed.hostname or "", parsed.port or default_port))
    return hosts


def redis_database(url: str) -> int:
    """The database number of a redis:// URL's path (/0 or none: 0)."""
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


class ConfigurationError(ValueError):
    """A setting is invalid; the message names the variable and the rule, in one line."""


def load_settings() -> Settings:
    """Settings from the environment, or ConfigurationError naming the first bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(describe_settings_error(exc)) from None


def describe_settings_error(exc: ValidationError) -> str:
    """'MAX_BATCH_ROWS=abc: Input should be a valid integer' for the first error (and how many more)."""
    errors = exc.errors()
    first = errors[0]
    name = str(first["loc"][0]).upper() if first["loc"] else ""
    value = first.get("input")
    if isinstance(value, str):
        value = "***" if name in SECRET_SETTINGS else redact_url(value)
    where = (
        f"{name}={value!s:.60}: " if name and isinstance(value, str | int | float) else (f"{name}: " if name else "")
    )
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}{first['msg'].removeprefix('Value error, ')}{more}"


def redact_url(url: str) -> str:
    """`url` with its credentials and query string masked, for anything printed or served. Also a
    malformed URL ("redis//:pw@host", no scheme at all): everything before the last "@" after the
    scheme is masked, and everything after "?" (redis-py reads ?password= too)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest, question, _ = rest.partition("?")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}{'?***' if question else ''}"


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def redact_urls(text: str) -> str:
    """Every URL inside `text` redacted (an exception's message may quote one)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
