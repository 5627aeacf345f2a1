#!/usr/bin/env bash
# The main job on the embedded default: a local PostgreSQL and a local VPN + gateway host (a network namespace),
# tenants acme and globex, the isolation proof, then one VPN peer per tenant in its own client namespace through
# the gateway: acme's peer runs SQL on acme's database, globex's is dropped by the gateway and, once globex is
# exposed too, gets SQLSTATE 28000 from pg_hba with acme's password. Needs root (namespaces, wireguard-go, ufw).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
t0=$SECONDS
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
echo "== berqenas vpn peer add alice --tenant acme"
berqenas vpn peer add alice --tenant acme
echo "== berqenas vpn peer add bob --tenant globex"
berqenas vpn peer add bob --tenant globex
# a run after an earlier demo finds globex exposed: take that back, so the gateway's drop shows again
berqenas gateway unexpose globex >/dev/null 2>&1 || true
echo "== berqenas gateway expose acme"
berqenas gateway expose acme
echo "== VPN proof: each peer in its own client namespace, through the tunnel and the local gateway"
PYTHONPATH="$here/.collections" python -m tests.support.local_clients acme=alice globex=bob
echo "== done in $((SECONDS - t0)) s. Credentials: berqenas tenant show acme --credentials"
echo "   stop: berqenas local down; remove everything (namespace, cluster, $BERQENAS_HOME): berqenas local down --purge"
echo "   (these commands need the admin key: export BERQENAS_API_KEY_FILE=$BERQENAS_API_KEY_FILE)"
