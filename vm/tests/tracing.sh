#!/bin/sh
# The warpq tracepoints, the hist-trigger recipe of docs/tracing.md, trace-cmd,
# and the driver's own histograms (debugfs, warpqctl hist, reset).
. /warpq/tests/lib.sh
T=/sys/kernel/tracing
events="invalidate_start invalidate_end drain_start drain_end unmap_unpin zap rebuild_start rebuild_end queue_state submit_ioctl"
for e in $events; do
    [ -d $T/events/warpq/warpq_$e ] || fail "tracepoint warpq:warpq_$e missing"
done
echo "ok: $(echo $events | wc -w) warpq tracepoints present"

# The recipe: a synthetic latency event from start/end, then a log2 histogram.
echo 'warpq_inval_lat u64 lat; unsigned long notifier' >> $T/synthetic_events || fail "synthetic event"
echo 'hist:keys=notifier:ts0=common_timestamp' >> $T/events/warpq/warpq_invalidate_start/trigger || fail "start trigger"
echo 'hist:keys=notifier:lat=common_timestamp-$ts0:onmatch(warpq.warpq_invalidate_start).trace(warpq_inval_lat,$lat,notifier)' \
    >> $T/events/warpq/warpq_invalidate_end/trigger || fail "end trigger"
echo 'hist:keys=lat.log2:sort=lat' >> $T/events/synthetic/warpq_inval_lat/trigger || fail "latency histogram"
warpq-invalidate-check munmap > /dev/null || fail "workload (munmap)"
warpq-churn dontneed --rounds 2 > /dev/null || fail "workload (churn)"
cat $T/events/synthetic/warpq_inval_lat/hist
hits=$(sed -n 's/^ *Hits: *\([0-9]*\).*/\1/p' $T/events/synthetic/warpq_inval_lat/hist | head -n 1)
[ "${hits:-0}" -gt 0 ] || fail "the invalidation latency histogram is empty"
echo "ok: hist-trigger recipe: $hits invalidation latencies in log2 buckets"
# Remove the triggers again (reverse order), as the recipe says.
echo '!hist:keys=lat.log2:sort=lat' >> $T/events/synthetic/warpq_inval_lat/trigger
echo '!hist:keys=notifier:lat=common_timestamp-$ts0:onmatch(warpq.warpq_invalidate_start).trace(warpq_inval_lat,$lat,notifier)' \
    >> $T/events/warpq/warpq_invalidate_end/trigger
echo '!hist:keys=notifier:ts0=common_timestamp' >> $T/events/warpq/warpq_invalidate_start/trigger
echo '!warpq_inval_lat u64 lat; unsigned long notifier' >> $T/synthetic_events

# trace-cmd.
# munmap tears chunks down under commands in flight; whether one of those
# commands then needs a torn-down chunk (and so zaps) is timing. `touch` makes
# it certain: a FILL on a torn-down chunk must zap and rebuild.
trace-cmd record -q -e warpq -o /tmp/warpq.dat \
    sh -c 'warpq-invalidate-check munmap && warpq-invalidate-check touch' > /dev/null 2>&1 || fail "trace-cmd record"
n=$(trace-cmd report -i /tmp/warpq.dat 2>/dev/null | grep -c 'warpq_invalidate_end')
[ "$n" -gt 0 ] || fail "trace-cmd recorded no warpq_invalidate_end"
trace-cmd report -i /tmp/warpq.dat 2>/dev/null | grep -m1 'warpq_invalidate_end'
echo "ok: trace-cmd recorded $n invalidation ends"
# A teardown, the zap a command on a torn-down chunk causes, and its rebuild:
# every event fires.
for e in invalidate_start drain_start drain_end unmap_unpin zap rebuild_start rebuild_end queue_state; do
    trace-cmd report -i /tmp/warpq.dat 2>/dev/null | grep -q "warpq_$e:" || fail "trace-cmd recorded no warpq_$e"
done
trace-cmd report -i /tmp/warpq.dat 2>/dev/null | grep -m1 'warpq_drain_end:'
echo "ok: a teardown's drain_start, drain_end, unmap_unpin, zap, rebuild and queue_state events recorded"

# The driver's own histograms.
H=/sys/kernel/debug/warpq/warpq0/hist
check "debugfs: invalidate_ns histogram" grep -q '^invalidate_ns ' $H
check "debugfs: pin_ns histogram" grep -q '^pin_ns ' $H
warpqctl hist || fail "warpqctl hist"
warpqctl reset || fail "warpqctl reset"
check "reset empties the histograms" sh -c "[ ! -s $H ]"
check "reset zeroes the counters" grep -q '^commands_ok 0$' /sys/class/misc/warpq0/stats
