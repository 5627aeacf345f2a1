#!/usr/bin/env bash
# Installs everything berqenas.platform and its tests need on a Debian 12 machine (run as root).
# Idempotent: a second run only checks. Layout it creates, all inside the checkout:
#   .venv/          Python venv built from Debian's /usr/bin/python3 (so `runuser -u postgres` can use it)
#   .collections/   ansible_collections/{community.postgresql,community.general,ansible.posix,community.docker,awx.awx}
#                   plus berqenas/platform -> this checkout
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

# Every command the project runs is in scripts/commands.txt with its package; the preflight below checks them.
APT_PACKAGES=(python3 python3-venv python3-dev postgresql-15 postgresql-client-15 postgresql-common wireguard-go
  wireguard-tools ufw iptables nftables iproute2 iputils-ping curl openssh-server openssh-client systemd-container
  debootstrap unzip rsync shellcheck make procps ca-certificates)
ANSIBLE_BUNDLE=ansible==12.3.0

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "install: missing Debian packages (run as root): ${missing[*]}" >&2; exit 1; fi
  echo "install: apt-get install ${missing[*]}" >&2
  apt-get update -qq
  # the Debian postgresql package starts a cluster of its own; the platform never uses it
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -d /etc/postgresql/15/main ] && command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster 15 main stop 2>/dev/null || true
  fi
fi

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
stamp=.venv/.berqenas-installed
want=$(cat requirements-dev.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -U pip
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi

# Collections: Galaxy for users (requirements.yml); here, the same content from the PyPI bundle.
col=.collections/ansible_collections
if [ ! -f "$col/awx/awx/MANIFEST.json" ]; then
  dl=$(mktemp -d)
  if timeout 20 .venv/bin/ansible-galaxy collection install -r requirements.yml -p .collections >/dev/null 2>&1; then
    :
  else
    echo "install: Galaxy unreachable, taking the collections from the PyPI $ANSIBLE_BUNDLE bundle" >&2
    .venv/bin/pip download -q --disable-pip-version-check --no-deps -d "$dl" "$ANSIBLE_BUNDLE"
    unzip -q -o "$dl"/ansible-*.whl 'ansible_collections/community/postgresql/*' 'ansible_collections/community/general/*' \
      'ansible_collections/ansible/posix/*' 'ansible_collections/community/docker/*' \
      'ansible_collections/community/library_inventory_filtering_v1/*' 'ansible_collections/awx/awx/*' -d .collections
  fi
  rm -rf "$dl"
fi
mkdir -p "$col/berqenas"
[ -L "$col/berqenas/platform" ] || ln -sfn "$here" "$col/berqenas/platform"

# Preflight: every command of scripts/commands.txt that runs on this machine (host, venv, pg) is there.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
pg_bin=/usr/lib/postgresql/15/bin
absent=()
checked=0
while read -r cmd pkg where; do
  case "$cmd" in '' | '#'*) continue ;; esac
  case ",$where," in
    *,host,* | *,venv,* | *,pg,*) checked=$((checked + 1)) ;;&
    *,host,*) command -v "$cmd" >/dev/null || absent+=("$cmd (Debian package $pkg)") ;;
    *,venv,*) [ -x ".venv/bin/$cmd" ] || absent+=("$cmd (pip package $pkg in .venv)") ;;
    *,pg,*) [ -x "$pg_bin/$cmd" ] || absent+=("$cmd (Debian package $pkg, in $pg_bin)") ;;
  esac
done <scripts/commands.txt
if [ ${#absent[@]} -gt 0 ]; then
  printf 'install: preflight FAILED, missing: %s\n' "${absent[@]}" >&2
  exit 1
fi
echo "install: ok (.venv, .collections; preflight: $checked commands of scripts/commands.txt present)" >&2
