"""Settings: one class, read once in create_app() / the CLI and passed down."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
        None, description="redis:// or rediss:// URL of the shared cache tier; unset = in-process tier only."
    )
    cache_prefix: str = Field("housing", description="Prefix of every Redis key.")
    cache_ttl_seconds: int = Field(3600, ge=1, description="TTL of each cached row in Redis.")
    memory_cache_rows: int = Field(100_000, ge=0, description="Rows kept in the in-process LRU tier; 0 disables it.")
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
    log_level: str = Field("info", description="Python log level.")
    inline_predict_rows: int = Field(
        32,
        ge=0,
        description="Batches up to this size run on the event loop when the compiled inference path is active (a thread hop costs more than the prediction).",
    )

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> Settings:
        # Otherwise a full-size batch could never be admitted and would always get 429.
        if self.max_queued_rows < self.max_batch_rows:
            raise ValueError(
                f"MAX_QUEUED_ROWS ({self.max_queued_rows}) must be >= MAX_BATCH_ROWS ({self.max_batch_rows})"
            )
        return self
