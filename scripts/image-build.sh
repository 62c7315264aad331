#!/usr/bin/env bash
# image-build.sh: build the service image with docker or podman, whichever works here.
#
#   scripts/image-build.sh [NAME:TAG]        default housing-api:<short git sha>
#
#   ENGINE=docker|podman   force an engine (default: docker when its daemon answers, else podman)
#   IMAGE_BASE=debian|python
#                          podman only: debian (default) = the local bare Debian base that
#                          scripts/debian-base.sh bootstraps (no registry needed); python = the
#                          official python slim image and uv's image, as docker builds it
#
# The host's CA bundle (/etc/ssl/certs/ca-certificates.crt), when present, is passed as the build
# secret `ca-certificates`, so PyPI works behind a TLS-intercepting proxy; a secret never lands in
# a layer. Prints the image's size last.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-housing-api:$(git rev-parse --short HEAD 2>/dev/null || echo dev)}"
ca=/etc/ssl/certs/ca-certificates.crt

engine="${ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then engine=docker; else engine=podman; fi
fi

args=(
  --build-arg "VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)"
  --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  -t "$image"
)
[ -f "$ca" ] && args+=(--secret "id=ca-certificates,src=$ca")

if [ "$engine" = podman ]; then
  # runc + ulimits through CONTAINERS_CONF (and the base image, unless IMAGE_BASE=python).
  if [ "${IMAGE_BASE:-debian}" = debian ]; then
    podman_env="$(scripts/debian-base.sh)" || exit $?
    eval "$podman_env"
    args+=(
      --build-arg "BASE_IMAGE=$HOUSING_DEBIAN_BASE"
      --build-arg "PYTHON=/usr/bin/python3.11"
      --build-arg "BASE_APT=python3.11 ca-certificates"
      --build-arg "BUILD_APT=gcc libc6-dev python3.11-dev python3.11-venv"
      --build-arg "UV_FROM=uv-pip"
      # Never pulled: the unused uv-image stage points at the local base.
      --build-arg "UV_IMAGE=$HOUSING_DEBIAN_BASE"
    )
  else
    eval "$(scripts/debian-base.sh --env)"
    command -v podman >/dev/null 2>&1 || { echo "image-build: neither a Docker engine nor podman here" >&2; exit 3; }
  fi
  # --format docker keeps HEALTHCHECK (the OCI format has no field for it); --network host
  # reaches PyPI and the Debian mirror the way the host does.
  podman build --network host --format docker --layers "${args[@]}" .
  size="$(podman image inspect --format '{{.Size}}' "$image")"
else
  DOCKER_BUILDKIT=1 docker build "${args[@]}" .
  size="$(docker image inspect --format '{{.Size}}' "$image")"
fi
echo "built $image with $engine: $((size / 1000000)) MB"
