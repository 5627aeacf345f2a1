#!/usr/bin/env bash
# Every benchmark in bench/, one after the other; each prints its figure beside the baseline it measures in the
# same run. `scripts/bench.sh tenants vpn` runs only those. Not part of the test tiers (minutes, and noisy).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH="$here/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$here/.collections"
py=$here/.venv/bin/python
declare -A cmd=(
  [tenants]="$py bench/bench_tenants.py"
  [vpn]="$py bench/bench_vpn.py"
  [gateway]="$py bench/bench_gateway.py"
  [tds]="$py bench/bench_tds.py"
  [sync]="$py bench/bench_sync.py --emulator --no-variants"
)
order=(tenants vpn gateway tds sync)
[ $# -gt 0 ] && order=("$@")
rc=0
for b in "${order[@]}"; do
  [ -n "${cmd[$b]:-}" ] || { echo "bench: unknown benchmark $b (${!cmd[*]})" >&2; exit 2; }
  echo "=== bench $b: $(uptime | sed 's/.*load/load/')"
  t0=$SECONDS
  ${cmd[$b]} || rc=1
  echo "=== bench $b: $((SECONDS - t0))s"
done
exit $rc
