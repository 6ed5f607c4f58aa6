#!/usr/bin/env bash
# `make demo`: boot the debug kernel with warpq.ko, show what the driver
# found, run queues through fork and exec and address-space churn, and show
# the counters and latency histograms that produced.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# VM_QUIET: the console shows the demo, not the kernel's boot lines (they
# are in target/vm/demo/console.log); run.sh ends with a one-line verdict
# on the kernel log.
VM_QUIET=1 VM_OUT=${VM_OUT:-$(cd "$here/.." && pwd)/target/vm/demo} exec "$here/run.sh" '
set -e
echo "=== warpq demo on $(uname -r)"
echo "--- what warpq.ko logged when it bound the device:"
dmesg | grep "warpq" | sed "s/^\[[^]]*\] //"
echo "--- warpqctl list:"
warpqctl list
echo "--- a process and its forked child both drive the device, each with its own queue:"
warpq-example-fork
echo "--- 40 children share the parent'"'"'s file, every tenth exec'"'"'s with live registrations:"
warpq-invalidate-check forkstorm 40
echo "--- commands in flight while the buffer is unmapped, and while the process forks:"
warpq-invalidate-check munmap
warpq-invalidate-check fork
echo "--- a registration is the mapping it was registered on (the device never writes what is mapped there later):"
warpq-invalidate-check unmap-semantics
echo "--- address-space churn under a verified stream of commands:"
warpq-churn dontneed thp fork unrelated --rounds 2
echo "--- the device'"'"'s counters:"
warpqctl stats
echo "--- the latency histograms (log2 ns buckets):"
warpqctl hist
echo "--- pins:"
warpq-check pins
echo "=== summary: what the demo showed"
dev=$(ls /sys/class/misc | grep -m1 warpq)
echo "device: $dev on $(uname -r), $(cat /sys/class/misc/$dev/dma_translation 2>/dev/null || echo "?") DMA"
for key in commands_ok commands_failed invalidations ignored_by_policy teardowns rebuilds zaps; do
    printf "  %-18s %s\n" "$key" "$(sed -n "s/^$key //p" /sys/class/misc/$dev/stats)"
done
echo "  (a parent and its child with their own queues; a 40-process fork storm with execs;"
echo "   munmap and fork with commands in flight; buffers replaced at their address; address-space churn;"
echo "   every result verified)"
'
