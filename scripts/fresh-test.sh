#!/usr/bin/env bash
# make fresh-test: the README's quickstart on a bare Debian 12, as a newcomer runs it, in a podman
# container made from the base that scripts/debian-base.sh bootstraps (debootstrap --variant=minbase).
#
# In the container, as root: apt-get install make git ca-certificates python3 curl (nothing else),
# git clone of this repository's committed HEAD, `make run` until /readyz answers and the README's
# curl example returns four predictions, then `make test`; it fails when a test is skipped that the
# README's "What `make test` may skip" does not list (scripts/check_skips.py).
#
# It runs as a fresh VM's root would, so the image tests run too (podman inside it):
#  - privileged (`--privileged`): podman inside can mount, make namespaces and cgroups;
#  - its own network (slirp4netns): the inner podman's bridge (10.88.0.0/16) is made in the
#    container's network namespace, not in the host's, and cannot clash with the container's own
#    address (which on podman's default bridge would be in that same 10.88.0.0/16);
#  - /var/lib/containers on a volume of its own (removed with the container): the inner image store
#    sits on the host's file system, as a VM's disk would, not on the container's overlay root;
#  - the host's CA bundle installed in its trust store with update-ca-certificates, as a machine
#    behind this network's TLS-intercepting proxy has it (no SSL_CERT_FILE or PIP_CERT tricks).
#
# Uncommitted changes are not tested (the clone is of HEAD). Logs and the JUnit report go to
# build/fresh/.
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
# fresh-test-inside.sh installs it as /usr/local/share/ca-certificates/host-ca.crt once
# ca-certificates is there, then runs update-ca-certificates.
ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$ca" ]; then mounts+=(-v "$ca:/host-ca.crt:ro"); fi
# The inner image store: an anonymous volume, so --rm removes it with the container.
mounts+=(-v /var/lib/containers)
# The offline California housing data (README, "The model") sits beside the clone, as here.
if [ -d "$repo/../shared" ]; then
  mounts+=(-v "$(cd "$repo/../shared" && pwd):/root/shared:ro")
fi

say "clone of $(git rev-parse --short HEAD) in a privileged $HOUSING_DEBIAN_BASE, make run on 127.0.0.1:$port; logs in build/fresh/"
start=$SECONDS
status=0
podman run --rm --privileged --network slirp4netns --name "housing-fresh-$$" "${mounts[@]}" -e PORT="$port" \
  "$HOUSING_DEBIAN_BASE" bash /fresh-test-inside.sh || status=$?
elapsed=$((SECONDS - start))
if [ "$status" = 0 ]; then
  say "PASSED in $((elapsed / 60)) min $((elapsed % 60)) s"
else
  say "FAILED (exit $status) after $((elapsed / 60)) min $((elapsed % 60)) s; see build/fresh/*.log"
fi
exit "$status"
