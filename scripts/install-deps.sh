#!/usr/bin/env bash
# Installs the OS packages the tests and `make bench` need, when they are missing. As root it uses apt-get;
# otherwise it prints the exact command to run and carries on (tests that need a missing
# package skip and say so).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v wrk >/dev/null 2>&1 || need+=(wrk)  # make bench's load generator
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "missing: ${need[*]}; install with: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
fi
