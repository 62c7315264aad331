#!/usr/bin/env bash
# make fresh-test: the README's quickstart on a bare Debian 12, as a newcomer runs it, in a podman
# container made from the base that scripts/debian-base.sh bootstraps (debootstrap --variant=minbase).
#
# In the container, as root: apt-get install make git ca-certificates python3 curl (nothing else),
# git clone of this repository's committed HEAD, `make run` until /readyz answers and the README's
# curl example returns four predictions, then `make test`; it fails when a test is skipped that the
# README's "What `make test` may skip" does not list (scripts/check_skips.py).
#
# Uncommitted changes are not tested (the clone is of HEAD). Logs and the JUnit report go to
# build/fresh/. The container uses the host's network (the service listens on a free loopback
# port) and trusts the host's CA bundle, for networks whose HTTPS goes through an intercepting proxy.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$repo/build/fresh"
say() { echo "fresh-test: $*" >&2; }

mkdir -p "$out"
rm -f "$out"/*.log "$out"/junit.xml "$out"/repo.bundle
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  say "uncommitted changes are not tested: the container clones HEAD ($(git rev-parse --short HEAD))"
fi
eval "$(scripts/debian-base.sh)"
git bundle create -q "$out/repo.bundle" HEAD
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

mounts=(-v "$out:/fresh" -v "$repo/scripts/fresh-test-inside.sh:/fresh-test-inside.sh:ro")
ca=/etc/ssl/certs/ca-certificates.crt
tls_env=()
if [ -f "$ca" ]; then
  mounts+=(-v "$ca:/host-ca.crt:ro")
  tls_env=(-e SSL_CERT_FILE=/host-ca.crt -e PIP_CERT=/host-ca.crt -e REQUESTS_CA_BUNDLE=/host-ca.crt)
fi
# The offline California housing data (README, "The model") sits beside the clone, as here.
if [ -d "$repo/../shared" ]; then
  mounts+=(-v "$(cd "$repo/../shared" && pwd):/root/shared:ro")
fi

say "clone of $(git rev-parse --short HEAD) in $HOUSING_DEBIAN_BASE, make run on 127.0.0.1:$port; logs in build/fresh/"
start=$SECONDS
status=0
podman run --rm --network host --name "housing-fresh-$$" "${mounts[@]}" "${tls_env[@]}" -e PORT="$port" \
  "$HOUSING_DEBIAN_BASE" bash /fresh-test-inside.sh || status=$?
elapsed=$((SECONDS - start))
if [ "$status" = 0 ]; then
  say "PASSED in $((elapsed / 60)) min $((elapsed % 60)) s"
else
  say "FAILED (exit $status) after $((elapsed / 60)) min $((elapsed % 60)) s; see build/fresh/*.log"
fi
exit "$status"
