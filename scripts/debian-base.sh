#!/usr/bin/env bash
# debian-base.sh: make podman usable on this machine and give it a bare Debian 12 base image.
#
#   scripts/debian-base.sh            ensure tools + containers.conf + base image; print the env
#   scripts/debian-base.sh --env      only write containers.conf and print the env (no tools, no base)
#   scripts/debian-base.sh --rebuild  bootstrap the base again even when podman already has it
#
# Use it as:   eval "$(scripts/debian-base.sh)"   then   podman build --from "$HOUSING_DEBIAN_BASE" ...
#
# What it does, in order:
#  1. Installs podman, buildah, runc and debootstrap with apt-get when any is missing (root only).
#  2. Writes containers.conf into $HOUSING_PODMAN_DIR (default: <repo>/build/podman), never /etc:
#     runc instead of crun (crun cannot start containers on these VMs), fixed ulimits, cgroupfs and
#     file events (there is no systemd). Podman reads it through CONTAINERS_CONF.
#  3. Unless podman already has it (the image store is machine-wide, so fresh clones reuse it):
#     debootstrap --variant=minbase bookworm from the mirror the host's apt uses
#     (/etc/apt/sources.list.d/debian.sources), copies the host's apt sources in, and imports the
#     tree as localhost/housing-debian:bookworm-minbase. It stays bare: no Python, nothing extra.
#  4. Checks that podman can start a container from it.
#
# Output: stdout carries only `export NAME=value` lines (CONTAINERS_CONF, HOUSING_DEBIAN_BASE);
# progress goes to stderr. Exit 0 ok; 3 = podman cannot be made to run here (one line says why:
# not root with tools missing, no apt-get, a container will not start); anything else = failure.
# Runs are serialised by a machine-wide lock, so parallel clones and CI do not bootstrap twice.
set -euo pipefail

BASE_IMAGE="localhost/housing-debian:bookworm-minbase"
SUITE="bookworm"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
conf_dir="${HOUSING_PODMAN_DIR:-$repo/build/podman}"
mode="all"
case "${1:-}" in
  "") ;;
  --env) mode="env" ;;
  --rebuild) mode="rebuild" ;;
  -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--env|--rebuild|--help]" >&2; exit 2 ;;
esac

say() { echo "debian-base: $*" >&2; }
cannot() { echo "debian-base: cannot run podman here: $*" >&2; exit 3; }

write_conf() {
  mkdir -p "$conf_dir"
  cat > "$conf_dir/containers.conf" <<'EOF'
# Written by scripts/debian-base.sh; used through CONTAINERS_CONF (never installed in /etc).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
# crun refuses to start containers on these VMs (no CAP_SYS_RESOURCE, hugetlb in cgroup v2).
runtime = "runc"
# No systemd here: plain cgroupfs, and events in a file rather than the journal.
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  export CONTAINERS_CONF="$conf_dir/containers.conf"
}

print_env() {
  printf 'export CONTAINERS_CONF=%q\n' "$CONTAINERS_CONF"
  printf 'export HOUSING_DEBIAN_BASE=%q\n' "$BASE_IMAGE"
}

install_tools() {
  local need=() tool
  for tool in podman buildah runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || cannot "not root and ${need[*]} missing (sudo apt-get install -y ${need[*]})"
  command -v apt-get >/dev/null 2>&1 || cannot "no apt-get to install ${need[*]}"
  say "installing ${need[*]} with apt-get"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${need[@]}" uidmap slirp4netns fuse-overlayfs ca-certificates >/dev/null
}

# The first URI of the host's Debian sources (deb822 or one-line format); deb.debian.org otherwise.
host_mirror() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri="$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources \
      | grep -v -- '-security' | head -n1)"
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri="$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list)"
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

bootstrap_base() {
  [ "$(id -u)" = 0 ] || cannot "debootstrap needs root"
  local mirror work
  mirror="$(host_mirror)"
  work="$(mktemp -d "${TMPDIR:-/tmp}/housing-debian.XXXXXX")"
  # shellcheck disable=SC2064  # expand $work now: it is local
  trap "rm -rf '$work'" EXIT
  say "debootstrap --variant=minbase $SUITE from $mirror (a few minutes, once per machine)"
  local keyring=()
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
  debootstrap --variant=minbase "${keyring[@]}" "$SUITE" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; say "debootstrap failed"; exit 1; }
  # The same apt sources as the host (updates and security included), and no caches in the image.
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$work/rootfs/etc/apt/sources.list.d/debian.sources"
    rm -f "$work/rootfs/etc/apt/sources.list"
  fi
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"* \
         "$work/rootfs/var/log/"*.log "$work/rootfs/var/log/apt/"*
  say "importing it as $BASE_IMAGE"
  tar --numeric-owner -C "$work/rootfs" -c . | podman import --quiet \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'LABEL org.opencontainers.image.description="bare Debian 12 (debootstrap --variant=minbase), made by scripts/debian-base.sh"' \
    --message "debootstrap --variant=minbase $SUITE $mirror" - "$BASE_IMAGE" >/dev/null
  rm -rf "$work"
  trap - EXIT
}

write_conf
if [ "$mode" = env ]; then
  print_env
  exit 0
fi

install_tools
lock="${HOUSING_DEBIAN_BASE_LOCK:-/tmp/housing-debian-base.lock}"
exec 9>"$lock"
flock 9
if [ "$mode" = rebuild ] || ! podman image exists "$BASE_IMAGE" 2>/dev/null; then
  bootstrap_base
else
  say "reusing $BASE_IMAGE (already in podman's image store)"
fi
podman run --rm --network none "$BASE_IMAGE" /bin/true >/dev/null 2>"$conf_dir/run-check.err" \
  || cannot "a container does not start: $(tail -n1 "$conf_dir/run-check.err")"
print_env
