#!/usr/bin/env bash
# The test tiers. `scripts/test.sh all` runs every tier and prints the time of each; one tier by name runs alone.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH="$here/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$here/.collections"
export ANSIBLE_HOME="${ANSIBLE_HOME:-$here/.cache/ansible-home}"
export ANSIBLE_NOCOLOR=1
mkdir -p "$ANSIBLE_HOME" .cache

declare -a summary=()
failed=0
tier() {  # tier NAME CMD...
  local name=$1; shift
  local t0=$SECONDS
  echo "=== tier $name: start ($(date -u +%H:%M:%S))"
  if "$@"; then rc=0; else rc=$?; failed=1; fi
  local dt=$((SECONDS - t0))
  summary+=("$(printf '%-12s %4ds  %s' "$name" "$dt" "$([ $rc = 0 ] && echo ok || echo "FAILED rc=$rc")")")
  echo "=== tier $name: $([ $rc = 0 ] && echo ok || echo "FAILED rc=$rc") in ${dt}s"
}

t_lint() {
  ruff check . || return 1
  HOME="$ANSIBLE_HOME" ansible-lint --offline -q  # the whole collection; paths and profile in .ansible-lint
}
t_sanity() { bash scripts/sanity.sh; }
# pytest's own summary line of each tier is kept and printed again at the end (with a plain total line), so the
# last lines of a run give its counts however long the molecule tier's output after it is
declare -a counts=()
pytest_tier() {  # pytest_tier NAME PYTEST-ARGS...
  local name=$1; shift
  local log=.cache/pytest-$name.log rc line
  python -m pytest "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  line=$(grep -E '^=*[ ]*[0-9]+ (passed|failed|skipped|deselected|error)' "$log" | tail -1 | sed -E 's/^=+ //; s/ =+$//')
  counts+=("$(printf '%-12s %s' "$name" "${line:-no pytest summary line (rc=$rc)}")")
  return "$rc"
}
t_unit() { pytest_tier unit -m unit -q; }
# the 25 slowest setups and calls are printed at the end of the tier: where the next cut of CI time is
t_integration() { pytest_tier integration -m "not unit" -q --durations=25; }
t_molecule() { bash scripts/molecule.sh; }

case "${1:-all}" in
  lint) tier lint t_lint ;;
  sanity) tier sanity t_sanity ;;
  unit) tier unit t_unit ;;
  integration) tier integration t_integration ;;
  molecule) tier molecule t_molecule ;;
  all)
    tier lint t_lint
    tier unit t_unit
    tier integration t_integration
    # sanity (CPU: ansible-test) and molecule (mostly waiting on machines and ansible) run side by side; sanity's
    # output goes to a log printed whole after molecule's, so neither interleaves the other
    sanity_log=.cache/sanity.log
    ( tier sanity t_sanity; printf '%s\n' "${summary[-1]}" > .cache/sanity.tier; exit "$failed" ) > "$sanity_log" 2>&1 &
    sanity_pid=$!
    tier molecule t_molecule
    if ! wait "$sanity_pid"; then failed=1; fi
    cat "$sanity_log"
    summary+=("$(cat .cache/sanity.tier 2>/dev/null || printf '%-12s FAILED (no result)' sanity)")
    ;;
  *) echo "usage: $0 [all|lint|sanity|unit|integration|molecule]" >&2; exit 2 ;;
esac
echo "=== tier times"
printf '%s\n' "${summary[@]}"
if [ ${#counts[@]} -gt 0 ]; then
  echo "=== test counts (pytest)"
  printf '%s\n' "${counts[@]}"
  total() { printf '%s\n' "${counts[@]}" | grep -oE "[0-9]+ $1" | awk '{n += $1} END {print n + 0}'; }
  echo "tests: $(total passed) passed, $(($(total failed) + $(total error))) failed, $(total skipped) skipped"
fi
exit $failed
