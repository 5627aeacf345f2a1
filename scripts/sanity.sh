#!/usr/bin/env bash
# `ansible-test sanity` on the collection as users get it: build the tarball, install it offline into a throwaway
# ansible_collections/ tree next to its dependency collections, and run every sanity test there with NO ignore file.
#
#   bash scripts/sanity.sh [ansible-test sanity options...]     e.g. --test validate-modules, -v
#
# Offline: ansible-test bootstraps pip in each of its venvs with a get-pip script it downloads from a host we cannot
# reach; a stand-in (CPython's bundled pip via ensurepip) is put in its cache first. Its venvs live under a HOME of
# our own, .cache/sanity/home (never /root), so a second run reuses them; `make clean` drops them.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
venv_bin=$here/.venv/bin
deps=$here/.collections/ansible_collections
[ -x "$venv_bin/ansible-test" ] || { echo "sanity: $venv_bin/ansible-test missing: run scripts/install.sh" >&2; exit 1; }
[ -d "$deps/community/postgresql" ] || { echo "sanity: $deps has no dependency collections: run scripts/install.sh" >&2; exit 1; }

cache=$here/.cache/sanity
mkdir -p "$cache"
# Sanity venv shebangs must stay under 127 characters (ansible-test's own warning): a deep checkout gets a short
# link in /tmp that points at the cache, so the venvs still live (and persist) under .cache/sanity.
home=$cache/home
if [ ${#home} -gt 48 ]; then
  link=/tmp/bq-sanity-$(printf %s "$here" | sha256sum | cut -c1-12)
  ln -sfn "$home" "$link"
  home=$link
fi
mkdir -p "$home/.ansible/test/cache"

# One run at a time per checkout: concurrent runs would race on creating the same cached venvs.
exec 9>"$cache/lock"
if ! flock -n 9; then
  echo "sanity: another sanity run holds $cache/lock, waiting" >&2
  flock 9
fi

# The get-pip stand-in, under the name this ansible-test asks for (get_pip_<pip version>.py).
pip_version=$("$venv_bin/python" -c '
import types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="3.11"))["pip"])')
cat >"$home/.ansible/test/cache/get_pip_${pip_version//./_}.py" <<'EOF'
# Offline stand-in for ansible-test's get-pip script: CPython's bundled pip, then `pip install <args>`.
import os
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"], stdout=subprocess.DEVNULL)
os.environ.pop("PIP_CONFIG_FILE", None)  # pip must see /etc/pip.conf (its cert) even if a caller blanked it
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *args])
EOF

# Outside the checkout: under a git work tree ansible-test would only test files git tracks there (none).
work=$(mktemp -d "${TMPDIR:-/tmp}/bq-sanity.XXXXXX")
trap 'rm -rf "$work"' EXIT
t0=$SECONDS
"$venv_bin/ansible-galaxy" collection build --force --output-path "$work" "$here" >/dev/null
tarball=$(ls "$work"/berqenas-platform-*.tar.gz)
HOME=$home ANSIBLE_HOME=$home/.ansible "$venv_bin/ansible-galaxy" collection install --offline --no-deps --force \
  -p "$work/root" "$tarball" >/dev/null 2>&1 \
  || { echo "sanity: installing $tarball failed" >&2; exit 1; }
# Dependencies beside it (links: ansible-test only needs the tested collection to be a real directory).
for ns in "$deps"/*; do
  [ "$(basename "$ns")" = berqenas ] && continue
  ln -s "$ns" "$work/root/ansible_collections/$(basename "$ns")"
done
coll=$work/root/ansible_collections/berqenas/platform
if [ -d "$coll/tests/sanity" ]; then
  echo "sanity: the built collection ships tests/sanity (an ignore file?): not allowed" >&2
  exit 1
fi
echo "sanity: built and installed $(basename "$tarball") in $((SECONDS - t0))s; running ansible-test sanity" >&2

cd "$coll"
set +e
env -i HOME="$home" PATH="$venv_bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" LANG=C.UTF-8 \
  TMPDIR="${TMPDIR:-/tmp}" \
  "$venv_bin/ansible-test" sanity --venv --python 3.11 --color no "$@" 2>&1 | tee "$work/sanity.log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" != 0 ]; then
  echo "sanity: FAILED (rc=$rc); issues per file (paths relative to the collection root):" >&2
  sed -nE 's/^ERROR: ([^ :]+):[0-9]+:[0-9]+: .*/\1/p' "$work/sanity.log" | sort | uniq -c | sort -rn >&2
fi
exit "$rc"
