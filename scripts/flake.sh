#!/usr/bin/env bash
# flake.sh: run the README's test command N times while the machine is busy,
# and report every failing test. Use it before submitting a change that
# touches timing, concurrency or a cluster test.
#
#   scripts/flake.sh [N] [-- go test arguments...]
#
# The arguments replace the default `-race ./...` (the README's test
# command); -count=1 is always added.
#
# N defaults to 5. The load is `stress-ng --cpu 2` when stress-ng is
# installed (apt-get install stress-ng), otherwise two busy shell loops;
# KVSTORE_FLAKE_LOAD=0 runs without load. Each run's output is kept in
# $KVSTORE_FLAKE_DIR (a new temporary directory by default), and the last
# line says how many runs failed and which tests.
set -uo pipefail
cd "$(dirname "$0")/.."

n=5
if [ $# -gt 0 ] && [ "$1" != "--" ]; then n=$1; shift; fi
[ "${1:-}" = "--" ] && shift
flags=("$@")
[ ${#flags[@]} -gt 0 ] || flags=(-race ./...)

dir=${KVSTORE_FLAKE_DIR:-$(mktemp -d /tmp/kvstore-flake.XXXXXX)}
mkdir -p "$dir"
export KVSTORE_REQUIRE_ZOOKEEPER=${KVSTORE_REQUIRE_ZOOKEEPER:-1}

load_pids=()
stop_load() {
  [ ${#load_pids[@]} -gt 0 ] && kill "${load_pids[@]}" 2>/dev/null
  wait 2>/dev/null
}
trap stop_load EXIT
if [ "${KVSTORE_FLAKE_LOAD:-1}" != 0 ]; then
  if command -v stress-ng >/dev/null 2>&1; then
    stress-ng --cpu 2 --quiet &
    load_pids+=($!)
  else
    for _ in 1 2; do (while :; do :; done) & load_pids+=($!); done
  fi
  echo "flake: load on (pids ${load_pids[*]})"
fi

failed_runs=0
all_failed=()
for i in $(seq 1 "$n"); do
  out="$dir/run$i.log"
  start=$(date +%s)
  go test -count=1 "${flags[@]}" >"$out" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  tests=$(grep -E '^\s*--- FAIL: ' "$out" | awk '{print $3}' | sort -u | tr '\n' ' ')
  pkgs=$(grep -E '^FAIL[[:space:]]+[^[:space:]]+' "$out" | awk '{print $2}' | sort -u | tr '\n' ' ')
  panics=$(grep -c '^panic: ' "$out")
  if [ $rc -ne 0 ]; then
    failed_runs=$((failed_runs + 1))
    all_failed+=($tests)
    echo "flake: run $i/$n FAILED in ${secs}s: tests [${tests}] packages [${pkgs}] panics ${panics} (log $out)"
  else
    echo "flake: run $i/$n ok in ${secs}s"
  fi
done
uniq_failed=$(printf '%s\n' "${all_failed[@]:-}" | sort | uniq -c | sort -rn | awk 'NF==2{printf "%s(x%s) ", $2, $1}')
echo "flake: $((n - failed_runs)) passed, $failed_runs failed${uniq_failed:+: ${uniq_failed% }} (logs in $dir)"
[ $failed_runs -eq 0 ]
