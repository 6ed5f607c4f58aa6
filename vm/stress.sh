#!/usr/bin/env bash
# `make stress DURATION=seconds`: one boot of the debug kernel running
# warpq-stress-suite (every stress scenario, with the leak, pin and splat
# checks after each). Prints a line per scenario and `N passed, N failed`;
# the JSON summary goes to target/stress/summary.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
duration=${DURATION:-600}
out=$top/target/stress
mkdir -p "$out"
# The scenarios take about DURATION; boot, kmemleak scans and the harness
# add a few minutes.
rc=0
VM_OUT="$out/vm" VM_TIMEOUT=${VM_TIMEOUT:-$((duration * 2 + 900))} "$here/run.sh" \
    "warpq-stress-suite --seconds $duration ${SCENARIOS:-}" 2>&1 | tee "$out/run.log" || rc=$?
sed -n '/^==WARPQ-STRESS-JSON-BEGIN==/,/^==WARPQ-STRESS-JSON-END==/p' "$out/vm/console.log" | tr -d '\r' \
    | grep -Ev '^\[ *[0-9]+\.[0-9]+\] ' | sed '1d;$d' > "$out/summary.json"
echo "stress: target/stress/summary.json, logs in target/stress/vm/"
exit "$rc"
