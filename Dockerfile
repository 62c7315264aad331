# syntax=docker/dockerfile:1
# housing-api image: `make image` builds it (docker build, tagged with the short git sha).
# Two stages: the builder resolves uv.lock into /app/.venv (and compiles any C extension);
# the runtime copies only that venv and the model, so no compiler and no uv ship.
# Both stages use the same pinned base: the venv's python symlink points at /usr/local/bin.

FROM python:3.11.11-slim-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv
# Compile bytecode now (the runtime filesystem is read-only); copy rather than hardlink out of
# the cache mount; never download a Python: use the base image's.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first, in their own layer, so a source change does not reinstall numpy.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
# setup.p[y] and MANIFEST.i[n] copy those files only when they exist (for the optional C extension).
COPY README.md setup.p[y] MANIFEST.i[n] ./
COPY src ./src
# --no-editable installs the package into site-packages, so /app/src is not needed at run time.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# The init container that fetches MODEL_URI's registry version into MODEL_STORE (`make image-fetch`;
# docs/deployment.md, "Models from the MLflow registry"): the builder's venv plus MLflow's client
# (the `mlflow` extra), which the runtime image leaves out. `docker build` without --target skips it.
# Kubernetes runs it as uid 10001 (securityContext); it only reads the registry and writes /models.
FROM builder AS fetch
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --extra mlflow
ENV MODEL_STORE=/models
ENTRYPOINT ["/app/.venv/bin/housing-api", "fetch-model"]

FROM python:3.11.11-slim-bookworm AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="housing-api" \
      org.opencontainers.image.description="FastAPI service predicting California house prices, with a two-tier prediction cache" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/example/housing-api" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.11-slim-bookworm"
# A fixed numeric uid/gid, so Kubernetes can check runAsNonRoot and fsGroup matches.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /app \
       --shell /usr/sbin/nologin app
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODEL_PATH=/app/model/model.joblib
WORKDIR /app
# Owned by root: the app user can read its code and model but not rewrite them.
COPY --from=builder /app/.venv /app/.venv
# The forest file lets the service start without importing scikit-learn (README, "The model").
COPY model/model.joblib model/model.json model/model.forest.npz /app/model/
USER 10001:10001
EXPOSE 8000
# No curl in a slim image; the standard library is enough. /livez answers once the process serves.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2)"]
# Exec form: the server is PID 1 and receives SIGTERM itself (no shell in between).
CMD ["housing-api", "serve", "--host", "0.0.0.0", "--port", "8000"]
