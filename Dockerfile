# syntax=docker/dockerfile:1
# housing-api image. `make image` builds it with docker or podman, whichever works here, and tags it
# with the short git sha. One Dockerfile, two ways to build it (docs/deployment.md, "The image"):
#
#   default (what users run): docker, the official python slim image, uv copied from its image.
#       docker build --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt -t housing-api .
#   a bare Debian base (no registry at all: scripts/debian-base.sh bootstraps and imports it):
#       podman build --network host --format docker \
#         --build-arg BASE_IMAGE=localhost/housing-debian:bookworm-minbase \
#         --build-arg PYTHON=/usr/bin/python3.11 --build-arg UV_FROM=uv-pip \
#         --build-arg UV_IMAGE=localhost/housing-debian:bookworm-minbase \
#         --build-arg "BASE_APT=python3.11 ca-certificates" \
#         --build-arg "BUILD_APT=gcc libc6-dev python3.11-dev python3.11-venv" -t housing-api .
#
# Stages: `base` is the runtime's Python; the builder adds a compiler and uv and resolves uv.lock
# into /app/.venv (runtime dependencies only: no scikit-learn, SciPy or joblib); the runtime copies
# that venv and the model, so no compiler, no uv and no pickle loader ship. Both stages share `base`,
# so the venv's python symlink (PYTHON) resolves in the runtime too.
#
# Behind a TLS-intercepting proxy, pass the CA bundle as the build secret `ca-certificates`: the
# steps that reach PyPI use it as SSL_CERT_FILE / PIP_CERT when present. A secret is mounted for
# one RUN only and is never stored in a layer.

# The Python the service runs on, and how to install it when the base has none (bare Debian).
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
ARG PYTHON=/usr/local/bin/python3.11
# uv comes from its official image (uv-image) or from PyPI with pip (uv-pip: no registry needed).
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9
ARG UV_FROM=uv-image

FROM ${UV_IMAGE} AS uv-image

FROM ${BASE_IMAGE} AS base
# Empty on the official image; "python3.11 ca-certificates" on a bare Debian base.
ARG BASE_APT=""
RUN if [ -n "$BASE_APT" ]; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $BASE_APT \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
                  /var/log/apt /var/log/dpkg.log; \
    fi

FROM base AS build-base
# A compiler for the C extension (setup.py), plus Python.h and venv on a bare Debian base.
ARG BUILD_APT="gcc libc6-dev"
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $BUILD_APT \
    && rm -rf /var/lib/apt/lists/*

FROM build-base AS uv-pip
ARG PYTHON
ARG UV_VERSION=0.13.9
RUN --mount=type=secret,id=ca-certificates,required=false \
    if [ -f /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && "$PYTHON" -m venv /opt/uv \
    && /opt/uv/bin/pip install --quiet --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}" \
    && cp /opt/uv/bin/uv /uv

FROM ${UV_FROM} AS uv

FROM build-base AS builder
ARG PYTHON
COPY --from=uv /uv /bin/uv
# Compile bytecode now (the runtime filesystem is read-only); copy rather than hardlink out of
# the cache mount; never download a Python: use the base image's.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=${PYTHON} \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first, in their own layer, so a source change does not reinstall numpy.
# --no-dev and no extras: the `train` extra (scikit-learn, SciPy, joblib) stays out.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca-certificates,required=false \
    if [ -f /run/secrets/ca-certificates ]; then export SSL_CERT_FILE=/run/secrets/ca-certificates; fi \
    && uv sync --frozen --no-dev --no-install-project
# setup.p[y] and MANIFEST.i[n] copy those files only when they exist (for the optional C extension).
COPY README.md setup.p[y] MANIFEST.i[n] ./
COPY src ./src
# --no-editable installs the package into site-packages, so /app/src is not needed at run time.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca-certificates,required=false \
    if [ -f /run/secrets/ca-certificates ]; then export SSL_CERT_FILE=/run/secrets/ca-certificates; fi \
    && uv sync --frozen --no-dev --no-editable
# Slim the venv (target: under 90 MB): debug symbols out of extension modules (uvloop's alone are
# 11 MB; numpy's are stripped already, and its auditwheel-patched libraries must not be rewritten),
# test suites, type stubs and numpy's build-time tools (f2py, distutils, C headers) out. Then import what the service loads, so a broken
# library fails the build rather than the first request.
RUN find /app/.venv -name '*.so' ! -path '*/numpy*' -exec strip --strip-debug {} + \
    && find /app/.venv/lib -depth -type d -name tests -exec rm -rf {} + \
    && find /app/.venv/lib -name '*.pyi' ! -path '*/housing_api/*' -delete \
    && rm -rf /app/.venv/bin/f2py /app/.venv/bin/numpy-config /app/.venv/lib/python3.11/site-packages/numpy/f2py \
              /app/.venv/lib/python3.11/site-packages/numpy/distutils /app/.venv/lib/python3.11/site-packages/numpy/_core/include \
    && /app/.venv/bin/python -c "import housing_api._fastpath, housing_api._batchjson, housing_api._resp, housing_api._rowkeys, housing_api.app, numpy, uvloop, httptools, orjson"

# The init container that fetches MODEL_URI's registry version into MODEL_STORE (`make image-fetch`;
# docs/deployment.md, "Models from the MLflow registry"): the builder's venv plus MLflow's client
# (the `mlflow` extra), which the runtime image leaves out. `docker build` without --target skips it.
# Kubernetes runs it as uid 10001 (securityContext); it only reads the registry and writes /models.
# Prod reaches MLflow over https: MLflow's client checks the server against MLFLOW_TRACKING_SERVER_CERT_PATH
# (the CA mounted by components/registry-model), else certifi's public CAs. Nothing here turns checks off.
FROM builder AS fetch
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca-certificates,required=false \
    if [ -f /run/secrets/ca-certificates ]; then export SSL_CERT_FILE=/run/secrets/ca-certificates; fi \
    && uv sync --frozen --no-dev --no-editable --extra mlflow
ENV MODEL_STORE=/models
ENTRYPOINT ["/app/.venv/bin/housing-api", "fetch-model"]

FROM base AS runtime
ARG BASE_IMAGE
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
# The service serves from the verified forest file (no scikit-learn here, nothing unpickled); the
# joblib stays beside it because model.json's version is its sha256 (README, "The model").
COPY model/model.joblib model/model.json model/model.forest.npz /app/model/
USER 10001:10001
EXPOSE 8000
# No curl in a slim image; the standard library is enough. /livez answers once the process serves.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2)"]
# Exec form: the server is PID 1 and receives SIGTERM itself (no shell in between).
CMD ["housing-api", "serve", "--host", "0.0.0.0", "--port", "8000"]
# Labels last: the build time and revision change on every build, and anything after them would
# never come from the layer cache.
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
      org.opencontainers.image.base.name="${BASE_IMAGE}"
