#!/usr/bin/env bash
# What `make install` needs from outside the repository, installed when missing:
#   - Python >= 3.11 (Debian 12's python3 is 3.11; never installed here, only checked);
#   - uv, from PyPI into ~/.local/bin (with Debian's python3-pip when pip is missing: Debian's
#     python3 ships without it);
#   - gcc, libc6-dev and python3-dev, to compile the inference kernel (src/housing_api/_fastpath.c);
#   - redis-server, redis-sentinel and prometheus-redis-exporter, which the tests use, wrk, make
#     bench's load generator, and procps (`uptime`,
#     which the benchmarks record; a minimal Debian lacks it).
# As root with apt-get it installs them. Otherwise it prints the one command to run, and fails
# when `make run` cannot work without it (redis-server alone is a warning: those tests skip).
set -euo pipefail
APT_INSTALL="apt-get install -y --no-install-recommends"
UV_HOME="$HOME/.local/bin"

say() { echo "install-deps: $*" >&2; }

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  say "Python >= 3.11 is needed as python3 (found: $(python3 --version 2>&1 || echo none)); on Debian: apt-get install -y python3"
  exit 1
fi

find_uv() { command -v uv 2>/dev/null || { [ -x "$UV_HOME/uv" ] && echo "$UV_HOME/uv"; }; }
python_headers() {
  python3 -c 'import pathlib, sys, sysconfig; sys.exit(not pathlib.Path(sysconfig.get_paths()["include"], "Python.h").is_file())'
}

required=()  # without these, `make run` cannot work
optional=()  # without these, some tests skip and say why
if [ -z "$(find_uv)" ] && ! python3 -m pip --version >/dev/null 2>&1; then required+=(python3-pip); fi
command -v cc >/dev/null 2>&1 || required+=(gcc libc6-dev)
python_headers || required+=(python3-dev)
command -v redis-server >/dev/null 2>&1 || optional+=(redis-server)
# The Sentinel and Cluster tests (redis-sentinel; redis-cli --cluster) and the exporter's metric check.
command -v redis-sentinel >/dev/null 2>&1 || optional+=(redis-sentinel)
command -v prometheus-redis-exporter >/dev/null 2>&1 || optional+=(prometheus-redis-exporter)
command -v wrk >/dev/null 2>&1 || optional+=(wrk)
command -v uptime >/dev/null 2>&1 || optional+=(procps)
missing=("${required[@]}" "${optional[@]}")

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $APT_INSTALL -qq "${missing[@]}" >/dev/null
  elif [ ${#required[@]} -gt 0 ]; then
    say "missing ${missing[*]}; run: sudo apt-get update && sudo $APT_INSTALL ${missing[*]}"
    exit 1
  else
    say "missing ${missing[*]} (the tests that need it skip); run: sudo apt-get update && sudo $APT_INSTALL ${missing[*]}"
  fi
fi

if [ -z "$(find_uv)" ]; then
  say "installing uv from PyPI into $UV_HOME"
  # --user keeps it out of the system's site-packages. Debian marks its Python "externally managed"
  # (PEP 668) and refuses even that, so say we know: only ~/.local is written.
  python3 -m pip install --user --quiet --root-user-action=ignore uv 2>/dev/null \
    || python3 -m pip install --user --quiet --root-user-action=ignore --break-system-packages uv
  [ -n "$(find_uv)" ] || { say "pip installed uv but it is not in $UV_HOME or on PATH"; exit 1; }
fi
