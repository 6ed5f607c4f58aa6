#!/usr/bin/env bash
# `make bench`: one boot of the perf kernel running warpq-bench; the report
# goes to target/bench/report.md and report.json, and warpq-plot (on the
# host) draws its ratios and histograms as target/bench/*.svg.
#
# BENCH='B4 B5' runs only those benchmarks (names: warpq-bench --list).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
out=$top/target/bench
mkdir -p "$out"
# Only names the guest program knows, each a word: nothing else reaches the
# guest's shell.
only=$(printf '%s\n' ${BENCH:-} | grep -E '^[A-Za-z0-9]+$' | tr '\n' ' ' || true)
VM_KERNEL=perf VM_OUT="$out/vm" VM_TIMEOUT=${VM_TIMEOUT:-1800} "$here/run.sh" "
warpq-bench $only > /tmp/report.txt 2>&1; rc=\$?"'
echo ==WARPQ-REPORT-BEGIN==
cat /tmp/report.txt
echo ==WARPQ-REPORT-END==
exit $rc' > "$out/run.log" 2>&1 || { tail -n 30 "$out/run.log"; exit 1; }
# The report, without kernel messages that may interleave on the console.
sed -n '/^==WARPQ-REPORT-BEGIN==/,/^==WARPQ-REPORT-END==/p' "$out/vm/console.log" | tr -d '\r' \
    | sed '1d;$d' | grep -Ev '^\[ *[0-9]+\.[0-9]+\] ' > "$out/report.txt"
sed -n '1,/^==WARPQ-BENCH-JSON-BEGIN==/p' "$out/report.txt" | sed '$d' > "$out/report.md"
sed -n '/^==WARPQ-BENCH-JSON-BEGIN==/,/^==WARPQ-BENCH-JSON-END==/p' "$out/report.txt" | sed '1d;$d' > "$out/report.json"
cat "$out/report.md"
echo "bench: target/bench/report.md, target/bench/report.json"
# The plots: warpq-plot is one of the guest programs `make guest` built
# (static, so it runs on this x86-64 host too); cargo builds it otherwise.
rm -f "$out"/*.svg
plot=$top/target/x86_64-unknown-linux-gnu/release/warpq-plot
if [ -x "$plot" ]; then
    "$plot" "$out/report.json" "$out" > "$out/plots.txt"
else
    (cd "$top" && ${CARGO:-cargo} run -q --release -p warpq-stress --bin warpq-plot -- "$out/report.json" "$out") > "$out/plots.txt"
fi
echo "bench: plots:"
sed "s|^$top/||" "$out/plots.txt" | sed 's/^/  /'
