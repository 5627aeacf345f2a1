#!/usr/bin/env bash
# Builds (once) the Debian 12 root filesystem the test machines boot from (systemd-nspawn, --volatile=overlay).
#   .cache/rootfs             symlink to the current tree .cache/rootfs-<hash> (read-only in use: every machine
#                             gets its own tmpfs overlay); <hash> is this script's, so a changed package list
#                             (or any edit here) builds a new tree beside the old one, which machines still
#                             running keep using; trees no running systemd-nspawn uses are removed.
#   .cache/rootfs.stamp       the hash of the current tree
# Nodes have no network, so every package a role installs is baked in here (roles then see apt as a no-op).
# The mirror is whatever apt on this host uses (/etc/apt/sources.list*), never a hard-coded host name.
# Usage: scripts/build-rootfs.sh [--force] [--print-path]       (concurrent callers wait on a lock)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache="$here/.cache"
link="$cache/rootfs"
stamp="$cache/rootfs.stamp"

# debootstrap (minbase) first, then these through apt inside the tree
BASE_PACKAGES=(python3 systemd systemd-sysv dbus iproute2)
PACKAGES=(wireguard-go wireguard-tools ufw iptables openssh-server openssh-client python3-apt sudo procps
  iputils-ping curl ca-certificates postgresql-15 postgresql-client-15 python3-psycopg python3-segno
  python3-cryptography netcat-openbsd)
SUITE=bookworm

force=0
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    --print-path) echo "$link"; exit 0 ;;
    *) echo "usage: $0 [--force] [--print-path]" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "build-rootfs: must run as root (debootstrap)" >&2; exit 1; }
for c in debootstrap systemd-nspawn flock; do
  command -v "$c" >/dev/null || { echo "build-rootfs: $c missing: run scripts/install.sh" >&2; exit 1; }
done

want=$(sha256sum "$0" | cut -c1-16)
rootfs="$cache/rootfs-$want"
mkdir -p "$cache"
exec 9>"$cache/rootfs.lock"
flock 9
if [ "$force" = 0 ] && [ -d "$rootfs" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && [ -L "$link" ]; then
  exit 0
fi

# The Debian mirror this host's apt uses: deb822 (*.sources) or one-line (sources.list) format.
mirror=""
shopt -s nullglob
for f in /etc/apt/sources.list.d/*.sources; do
  mirror=$(awk -v suite="$SUITE" '
    /^URIs:/ {u=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i==suite) s=1}
    /^$/ {if (u!="" && s) {print u; exit} u=""; s=0}
    END {if (u!="" && s) print u}' "$f" | head -1)
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ]; then
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    mirror=$(awk -v suite="$SUITE" '$1=="deb" {for (i=2;i<=NF;i++) if ($i==suite) {u=$(i-1); sub(/^\[.*\]$/,"",u); print u; exit}}' "$f" | head -1)
    [ -n "$mirror" ] && break
  done
fi
[ -n "$mirror" ] || { echo "build-rootfs: no '$SUITE' mirror found in /etc/apt/sources.list*" >&2; exit 1; }

t0=$SECONDS
tmp="$cache/rootfs.new"
rm -rf "$tmp"
mkdir -p "$cache/debs"
echo "build-rootfs: debootstrap $SUITE from $mirror" >&2
include=$(IFS=,; echo "${BASE_PACKAGES[*]}")
debootstrap --variant=minbase --cache-dir="$cache/debs" --include="$include" "$SUITE" "$tmp" "$mirror" \
  >"$cache/rootfs-build.log" 2>&1 || { tail -20 "$cache/rootfs-build.log" >&2; exit 1; }

# Nothing starts during the build (policy-rc.d 101), apt tolerates the (snapshot) mirror's dates.
printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
chmod 755 "$tmp/usr/sbin/policy-rc.d"
echo "build-rootfs: apt-get install ${PACKAGES[*]}" >&2
systemd-nspawn -q -D "$tmp" --keep-unit --register=no --resolv-conf=copy-host \
  --setenv=DEBIAN_FRONTEND=noninteractive \
  /bin/sh -c 'apt-get -o Acquire::Check-Valid-Until=false -qq update &&
    apt-get -o Acquire::Check-Valid-Until=false -y -qq --no-install-recommends install "$@" && apt-get clean' \
  sh "${PACKAGES[@]}" >>"$cache/rootfs-build.log" 2>&1 || { tail -20 "$cache/rootfs-build.log" >&2; exit 1; }
rm -f "$tmp/usr/sbin/policy-rc.d"
# Every machine sets its own name (--hostname); a baked-in one would win.
rm -f "$tmp/etc/hostname"
# Nodes have no network: no apt timers, no waiting for a network that never comes.
rm -f "$tmp"/etc/systemd/system/timers.target.wants/apt-daily*.timer
: >"$tmp/etc/machine-id"

rm -rf "$rootfs"
mv "$tmp" "$rootfs"
ln -sfn "rootfs-$want" "$link.tmp" && mv -T "$link.tmp" "$link"
echo "$want" >"$stamp"
# Older trees: removed unless a running machine still boots from one.
for old in "$cache"/rootfs-*; do
  if [ ! -d "$old" ] || [ "$old" = "$rootfs" ]; then continue; fi
  if ! grep -qsF -- "$old" /proc/[0-9]*/cmdline 2>/dev/null; then rm -rf "$old"; fi
done
echo "build-rootfs: ok in $((SECONDS - t0))s ($(du -sh "$rootfs" | cut -f1))" >&2
