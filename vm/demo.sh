#!/usr/bin/env bash
# `make demo`: boot the debug kernel with warpq.ko, show what the driver
# found, run queues through fork and exec and address-space churn, and show
# the counters and latency histograms that produced.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
VM_OUT=${VM_OUT:-$(cd "$here/.." && pwd)/target/vm/demo} exec "$here/run.sh" '
set -e
echo "=== warpq demo on $(uname -r)"
echo "--- what warpq.ko logged when it bound the device:"
dmesg | grep "warpq"
echo "--- warpqctl list:"
warpqctl list
echo "--- a process and its forked child both drive the device, each with its own queue:"
warpq-example-fork
echo "--- 40 children share the parent'"'"'s file, every tenth exec'"'"'s with live registrations:"
warpq-invalidate-check forkstorm 40
echo "--- commands in flight while the buffer is unmapped, and while the process forks:"
warpq-invalidate-check munmap
warpq-invalidate-check fork
echo "--- address-space churn under a verified stream of commands:"
warpq-churn dontneed thp fork unrelated --rounds 2
echo "--- the device'"'"'s counters:"
warpqctl stats
echo "--- the latency histograms (log2 ns buckets):"
warpqctl hist
echo "--- pins:"
warpq-check pins
'
