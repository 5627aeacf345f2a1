#!/usr/bin/env bash
# `molecule test` for every scenario under extensions/molecule/ (collection layout: <scenario>/molecule.yml,
# shared base config extensions/molecule/config.yml), one after the other, with the time of each.
#
#   bash scripts/molecule.sh [SCENARIO...]        (default: all)
#
# The machines come from the test harness (extensions/molecule/shared/create.yml); the rootfs they boot from is
# built first (scripts/build-rootfs.sh, cached under .cache/). HOME and ANSIBLE_HOME are throwaway, molecule's
# dependency step is off (collections from .collections). Exit status: 0 when every scenario passed (or there
# are none yet), 1 otherwise.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1
export PATH="$here/.venv/bin:$PATH"

scenarios=("$@")
if [ ${#scenarios[@]} = 0 ]; then
  for f in extensions/molecule/*/molecule.yml; do
    [ -f "$f" ] && scenarios+=("$(basename "$(dirname "$f")")")
  done
fi
if [ ${#scenarios[@]} = 0 ]; then
  echo "molecule: no scenarios under extensions/molecule/ yet (nothing to run)"
  exit 0
fi
for s in "${scenarios[@]}"; do
  [ -f "extensions/molecule/$s/molecule.yml" ] || { echo "molecule: no scenario $s (extensions/molecule/$s/molecule.yml)" >&2; exit 2; }
done

home=$(mktemp -d "${TMPDIR:-/tmp}/bq-molecule.XXXXXX")
chmod 700 "$home"
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  # machines a crashed scenario left up (their keeper state lives in molecule's ephemeral dir under $home)
  while IFS= read -r pidfile; do
    python -m tests.support.machines_cli down --state "$(dirname "$pidfile")" || true
  done < <(find "$home" -name keeper.pid 2>/dev/null)
  rm -rf "$home"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export HOME="$home" ANSIBLE_HOME="$home/.ansible" ANSIBLE_LOCAL_TEMP="$home/.ansible/tmp"
export ANSIBLE_COLLECTIONS_PATH="$here/.collections" ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 NO_COLOR=1
export PY_COLORS=0 MOLECULE_NO_LOG=false
mkdir -p "$ANSIBLE_LOCAL_TEMP"

t0=$SECONDS
if ! bash scripts/build-rootfs.sh; then
  echo "molecule: building the machines' rootfs failed (scripts/build-rootfs.sh)" >&2
  exit 1
fi
echo "molecule: rootfs ready in $((SECONDS - t0))s"

declare -a summary=()
failed=0
for s in "${scenarios[@]}"; do
  t0=$SECONDS
  echo "=== molecule scenario $s: start ($(date -u +%H:%M:%S))"
  if molecule test -s "$s"; then rc=0; else rc=$?; failed=1; fi
  dt=$((SECONDS - t0))
  line=$(printf '%-28s %4ds  %s' "$s" "$dt" "$([ $rc = 0 ] && echo ok || echo "FAILED rc=$rc")")
  summary+=("$line")
  echo "=== molecule scenario $line"
done
echo "=== molecule scenario times"
printf '%s\n' "${summary[@]}"
exit $failed
