#!/usr/bin/env bash
# The main job on the embedded default: a local PostgreSQL, tenants acme and globex, and the isolation proof.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH="$here/.venv/bin:$PATH"
export BERQENAS_HOME="${BERQENAS_HOME:-$here/.berqenas}"
# every command needs an API key: the first run creates the admin key in a 0600 file of the instance
export BERQENAS_API_KEY_FILE="${BERQENAS_API_KEY_FILE:-$BERQENAS_HOME/admin.key}"
if [ ! -e "$BERQENAS_API_KEY_FILE" ]; then
  echo "== berqenas apikey init --save $BERQENAS_API_KEY_FILE"
  berqenas apikey init --save "$BERQENAS_API_KEY_FILE"
fi
echo "== berqenas local up  (instance: $BERQENAS_HOME; API key: $BERQENAS_API_KEY_FILE)"
berqenas local up
for t in acme globex; do
  echo "== berqenas tenant create $t"
  berqenas tenant create "$t"
done
echo "== berqenas tenant list"
berqenas tenant list
echo "== isolation proof: each tenant's roles try to reach the other tenant"
python -m tests.support.isolation acme globex
echo "== done. Credentials: berqenas tenant show acme --credentials; stop: berqenas local down [--purge]"
echo "   (these commands need the admin key: export BERQENAS_API_KEY_FILE=$BERQENAS_API_KEY_FILE)"
