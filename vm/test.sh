#!/usr/bin/env bash
# warpq's test runner: host suites (cargo tests, loom models) and VM suites
# (one boot each, on the debug kernel). Prints one line per suite and ends
# with `N passed, N failed`; exits non-zero if anything failed.
#
#   vm/test.sh all     host + VM suites (what `make test` runs)
#   vm/test.sh host    host suites only (the lanes of `make check`)
#   vm/test.sh vm      VM suites only (needs `make initramfs` first)
#
# SUITES='regex' keeps only the VM suites whose name matches (grep -E).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
cd "$top"
what=${1:-all}
CARGO=${CARGO:-cargo}
logs=$top/target/test
mkdir -p "$logs"

passed=0
failed=0
failures=()
summary=()
why=()

record() { # record NAME STATUS SECONDS [DETAIL]
    local name=$1 status=$2 secs=$3 detail=${4:-}
    if [ "$status" = 0 ]; then
        passed=$((passed + 1)); summary+=("PASS  $name (${secs}s)${detail:+  $detail}")
    else
        failed=$((failed + 1)); failures+=("$name"); summary+=("FAIL  $name (${secs}s)${detail:+  $detail}")
    fi
    echo "=== ${summary[-1]}"
}

selected() { [ -z "${SUITES:-}" ] || grep -qE "$SUITES" <<< "$1"; }

# host_suite NAME command...: output goes to the terminal and to a log.
host_suite() {
    local name=$1; shift
    local start=$SECONDS
    echo "=== host: $name"
    "$@" 2>&1 | tee "$logs/$name.log"
    record "host: $name" "${PIPESTATUS[0]}" $((SECONDS - start))
}

# vm_suite NAME [VAR=value...] -- 'guest command': one boot of the VM.
vm_suite() {
    local name=$1; shift
    selected "$name" || return 0
    local env=()
    while [ "$1" != "--" ]; do env+=("$1"); shift; done
    shift
    local start=$SECONDS
    echo "=== vm: $name"
    env "${env[@]}" VM_OUT="$top/target/vm/$name" "$here/run.sh" "$1" 2>&1 | tee "$logs/vm-$name.log"
    local rc=${PIPESTATUS[0]}
    record "vm: $name" "$rc" $((SECONDS - start))
    # A CI log is cut in the middle: repeat why a suite failed at the end.
    [ "$rc" = 0 ] || why+=("--- vm: $name" "$(grep -aE 'FAIL|vm: |panic|not finish|hang' "$logs/vm-$name.log" | grep -av '^\[' | tail -n 25)")
}

# vm_expect_failure NAME PATTERN [VAR=value...] -- 'guest command': the
# harness itself must fail this boot and say PATTERN.
vm_expect_failure() {
    local name=$1 pattern=$2; shift 2
    selected "$name" || return 0
    local env=()
    while [ "$1" != "--" ]; do env+=("$1"); shift; done
    shift
    local start=$SECONDS
    echo "=== vm: $name (must fail)"
    env "${env[@]}" VM_OUT="$top/target/vm/$name" "$here/run.sh" "$1" > "$logs/vm-$name.log" 2>&1
    local rc=$?
    local status=0
    if [ "$rc" = 0 ]; then
        echo "harness accepted a run it must reject"; status=1
    elif ! grep -qE "$pattern" "$logs/vm-$name.log"; then
        echo "harness failed the run (status $rc) but did not say: $pattern"; status=1
    else
        grep -E "$pattern" "$logs/vm-$name.log" | head -n 1
    fi
    record "vm: $name" "$status" $((SECONDS - start)) "(harness rejected it with status $rc)"
}

# The host suites are the lanes of `make check` (vm/check.sh), one suite each.
if [ "$what" = all ] || [ "$what" = host ]; then
    for lane in fmt uapi clippy tests loom shape; do
        host_suite "check $lane" "$here/check.sh" "$lane"
    done
fi

if [ "$what" = all ] || [ "$what" = vm ]; then
    vm_suite driver-probe-iommu VM_IOMMU=on -- '/warpq/tests/driver-probe.sh on 15'
    # The reload path does not depend on the IOMMU: 15 rounds with it, 5 without.
    vm_suite driver-probe-no-iommu VM_IOMMU=off -- '/warpq/tests/driver-probe.sh off 5'
    # One boot for the queue mapping and the copy paths through the IOMMU
    # (a boot is most of a short suite's time); each program names its checks.
    vm_suite copy-iommu VM_IOMMU=on -- 'warpq-queue-check /dev/warpq0 && warpq-copy-check 10000 &&
        warpq-copy-check --ioctl 3000 && warpq-copy-check --edu 20 && warpq-check pins'
    vm_suite copy-no-iommu VM_IOMMU=off -- 'warpq-copy-check 10000 && warpq-check pins'
    # Suites that run under both backings and both policies reload the
    # module inside one boot for each configuration (vm/tests/matrix.sh).
    matrix=/warpq/tests/matrix.sh
    for backing in pin mirror; do
        vm_suite "invalidate-$backing" -- "$matrix $backing 'filtered strict' \
            'warpq-invalidate-check munmap && warpq-invalidate-check fork && warpq-invalidate-check touch &&
             warpq-invalidate-check overtake && warpq-invalidate-check overtake-random 5 &&
             warpq-invalidate-check unmap-semantics' &&
             $matrix $backing filtered 'warpq-invalidate-check window' &&
             warpq-check pins"
    done
    # The bounded subset of `make stress`: fork/exec storm, the OOM kills and
    # the fail-nth sweep under pin, storm and OOM again under mirror, each
    # followed by the suite's own pin, kmemleak and kernel-log checks.
    vm_suite stress-subset -- "warpq-stress-suite --seconds 30 storm oom fault-inject &&
        $matrix mirror filtered 'warpq-stress-suite --seconds 30 storm oom fault-inject' && warpq-check pins"
    # NUMA balancing on a 2-node guest: 60 s of verified stream under
    # filtered with mirror, 30 s with pin (no teardown by hinting), 10 s per
    # backing under strict (every pass tears down), then mprotect(PROT_READ)
    # still revokes device writes.
    # Swap: an idle queue's buffer in a memory cgroup pressed into zram.
    vm_suite numa-swap VM_NUMA=2 -- "$matrix mirror filtered 'warpq-invalidate-check numa 40 && warpq-invalidate-check swap' &&
        $matrix pin filtered 'warpq-invalidate-check numa 20 && warpq-invalidate-check swap' &&
        $matrix 'pin mirror' strict 'warpq-invalidate-check numa 10' && warpq-check pins"
    vm_suite process-death -- "$matrix 'pin mirror' filtered \
        'warpq-invalidate-check death && warpq-invalidate-check scm' && warpq-check pins"
    vm_suite adversarial -- "$matrix 'pin mirror' filtered warpq-adversarial && warpq-check pins"
    vm_suite user-api -- 'warpq-user-check && warpq-user-check queues && warpq-user-check accounting &&
        warpq-user-check queue-limit && warpqctl list && warpqctl policy get &&
        { warpq-copy-check 20000 > /tmp/load.log & sleep 4; warpqctl stats; warpqctl hist; warpqctl queues; warpqctl stats --json; wait $!; } &&
        grep -q "20000 commands verified" /tmp/load.log &&
        warpq-example-quickstart && warpq-example-copy && warpq-example-crc_file /bin/busybox && warpq-example-fork && warpq-example-async_queues &&
        warpq-c-submit &&
        /warpq/tests/matrix.sh "pin mirror" "filtered strict" "warpq-user-check writeback-file" && warpq-check pins'
    for backing in pin mirror; do
        vm_suite "churn-$backing" -- "$matrix $backing 'filtered strict' 'warpq-churn --rounds 1' && warpq-check pins"
    done
    vm_suite unbind -- 'warpq-user-check unbind && warpq-check pins'
    # Unbind under load (a WAIT without timeout, a publisher) 20 times, and a
    # ring whose indices are rewound while close and unbind abort the queue.
    # ... and poll/epoll on two queues beside a pipe: readiness, 100 000
    # completions without a missed wake-up, hang-up on unbind.
    vm_suite lifecycle -- 'warpq-lifecycle && warpq-poll-check && warpq-check pins'
    vm_suite tracing -- '/warpq/tests/tracing.sh && warpq-check pins'
    vm_suite module-parameters VM_MODULE_ARGS="engine=edu" -- 'test "$(cat /sys/module/warpq/parameters/engine)" = edu &&
        warpq-copy-check 90 && rmmod warpq && insmod /lib/modules/warpq.ko max_regions=2 max_region_mb=1 &&
        warpq-copy-check 10 | grep "register RO: .*ENOSPC" && warpq-check pins'

    vm_suite fuzz -- "$matrix 'pin mirror' filtered 'warpq-fuzz --seed 1 --runs 10 --steps 300 --seconds 60' &&
        warpq-check pins"
    vm_suite hmm-tests VM_NO_MODULE=1 -- '/warpq/tests/hmm-tests.sh'
    vm_expect_failure harness-exit-status 'command exited with status 1' -- 'false'
    vm_expect_failure harness-splat 'splat: .*WARNING: CPU: 0 PID: 1 at test' \
        -- 'echo "WARNING: CPU: 0 PID: 1 at test" > /dev/kmsg'
fi

echo
echo "=== summary"
printf '%s\n' "${summary[@]}"
[ ${#why[@]} -eq 0 ] || printf '%s\n' "${why[@]}"
[ ${#failures[@]} -eq 0 ] || echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
