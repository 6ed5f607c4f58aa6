#!/usr/bin/env bash
# Boot warpq's guest kernel in QEMU, run one command in it, power off, and
# exit with the command's exit status — or non-zero, naming the line, when the
# guest log shows a kernel splat or the guest does not finish in time.
#
#   vm/run.sh 'CMD'      run CMD (a shell command line) in the guest
#   vm/run.sh --shell    interactive guest shell on this terminal
#
# Environment (the Makefile passes these through):
#   VM_KERNEL=debug|perf  which kernel (default debug)
#   VM_IOMMU=on|off       intel-iommu in the machine or not (default on)
#   VM_ACCEL=auto|tcg|kvm auto uses KVM only after a probe boot succeeded
#   VM_TIMEOUT=seconds    wall-clock limit for the whole boot (default 900)
#   VM_EXTRA=dir          copied into the guest as /extra
#   VM_NO_MODULE=1        do not load warpq.ko at boot
#   VM_MODULE_ARGS='...'  parameters for insmod warpq.ko
#   VM_NUMA=2             a 2-node guest (one CPU and 1 GiB per node), so
#                         NUMA balancing scans; default one node
#   VM_OUT=dir            where console.log, dmesg.log and out.log go
#                         (default target/vm)
#   VM_QUIET=1            show only the command's output, not the kernel's
#                         lines (they stay in console.log), and end with a
#                         one-line verdict on the kernel log
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
cache=${WARPQ_CACHE:-$HOME/.cache/warpq}
flavour=${VM_KERNEL:-debug}
iommu=${VM_IOMMU:-on}
accel=${VM_ACCEL:-auto}
timeout_s=${VM_TIMEOUT:-900}
out=${VM_OUT:-$top/target/vm}

shell=0
if [ "${1:-}" = "--shell" ]; then shell=1; cmd="sh"; else cmd=${1:?usage: run.sh 'CMD' | --shell}; fi

objdir=$("$here/kernel.sh" --dir "$flavour")
kernel=$objdir/arch/x86/boot/bzImage
base_initrd=$top/target/initramfs/base-$flavour.cpio.gz
[ -f "$kernel" ] || { echo "vm: no $flavour kernel; run 'make kernel VM_KERNEL=$flavour'" >&2; exit 2; }
[ -f "$base_initrd" ] || { echo "vm: no $base_initrd; run 'make initramfs'" >&2; exit 2; }

mkdir -p "$out"
rm -f "$out"/console.log "$out"/dmesg.log "$out"/out.log "$out"/verdict.log

# The per-run part of the initramfs: the command, its options, VM_EXTRA.
# The kernel unpacks concatenated cpio archives in order, so the large base
# archive is built once and this small one is appended per run.
run_dir=$(mktemp -d)
# (The console reader started below must not outlive us: it would hold any
# lock our caller holds, such as a flock around the VM.)
trap 'rm -rf "$run_dir"; [ -z "${tail_pid:-}" ] || kill "$tail_pid" 2>/dev/null || true' EXIT
mkdir -p "$run_dir/root/warpq"
printf '%s\n' "$cmd" > "$run_dir/root/warpq/cmd"
{
    echo "WARPQ_NO_MODULE=${VM_NO_MODULE:-0}"
    echo "WARPQ_MODULE_ARGS='${VM_MODULE_ARGS:-}'"
    echo "WARPQ_SHELL=$shell"
} > "$run_dir/root/warpq/env"
if [ -n "${VM_EXTRA:-}" ]; then
    [ -d "$VM_EXTRA" ] || { echo "vm: VM_EXTRA=$VM_EXTRA is not a directory" >&2; exit 2; }
    cp -a "$VM_EXTRA" "$run_dir/root/extra"
fi
(cd "$run_dir/root" && find . | cpio -o -H newc --quiet | gzip -1) > "$run_dir/run.cpio.gz"
cat "$base_initrd" "$run_dir/run.cpio.gz" > "$run_dir/initrd.cpio.gz"

numa_args=()
smp=2
case ${VM_NUMA:-1} in
    1) ;;
    # One socket per node: CPUs of one socket share an LLC, and the kernel
    # warns (topology_sane) when LLC siblings sit on different nodes.
    2) smp=2,sockets=2,cores=1,threads=1
       numa_args=(-object memory-backend-ram,id=node0,size=1G -numa node,nodeid=0,cpus=0,memdev=node0
                  -object memory-backend-ram,id=node1,size=1G -numa node,nodeid=1,cpus=1,memdev=node1) ;;
    *) echo "vm: VM_NUMA=${VM_NUMA} (1 or 2)" >&2; exit 2 ;;
esac
qemu_args=(-machine q35 -smp "$smp" -m 2G -no-reboot -nodefaults -display none
           -kernel "$kernel" -initrd "$run_dir/initrd.cpio.gz" -device edu "${numa_args[@]}")
append="console=ttyS0 panic=-1 oops=panic loglevel=6 printk.devkmsg=on no_hash_pointers"
if [ "$iommu" = on ]; then
    qemu_args+=(-device intel-iommu,intremap=on)
    append+=" intel_iommu=on"
else
    append+=" intel_iommu=off"
fi

# KVM boots were seen to hang on these machines before the kernel prints
# anything: use KVM only when a short probe boot has printed the init banner.
kvm_works() {
    local probe=$cache/kvm-probe-$flavour
    if [ ! -f "$probe" ]; then
        local log; log=$(mktemp)
        # In a subshell whose stderr is dropped: a probe that dies of SIGABRT
        # would otherwise make bash print "Aborted".
        if [ -w /dev/kvm ] && ( timeout 30 qemu-system-x86_64 "${qemu_args[@]}" -accel kvm -cpu host \
               -append "$append rdinit=/warpq/probe" -serial "file:$log" >/dev/null 2>&1 ) 2>/dev/null \
           && grep -q "warpq-probe-ok" "$log"; then
            echo yes > "$probe"
        else
            echo no > "$probe"
        fi
        rm -f "$log"
    fi
    [ "$(cat "$probe")" = yes ]
}
case "$accel" in
    kvm) qemu_args+=(-accel kvm -cpu host) ;;
    tcg) qemu_args+=(-accel tcg -cpu max,la57=off) ;;
    auto) if kvm_works; then qemu_args+=(-accel kvm -cpu host); else qemu_args+=(-accel tcg -cpu max,la57=off); fi ;;
    *) echo "vm: VM_ACCEL must be auto, tcg or kvm" >&2; exit 2 ;;
esac

if [ "$shell" = 1 ]; then
    exec qemu-system-x86_64 "${qemu_args[@]}" -append "$append" -serial mon:stdio \
        -serial "file:$out/dmesg.log"
fi

# ttyS0: kernel console and the command's output; ttyS1: full dmesg, the
# kmemleak report and the exit status, written by init after the command.
touch "$out/console.log"
if [ "${VM_QUIET:-0}" = 1 ]; then
    # The kernel's lines carry a timestamp: show everything else.
    # (Killing tail ends the filter: it reads tail's output to its end.)
    tail -n +1 -f "$out/console.log" > >(tr -d '\r' | grep --line-buffered -v -E '^\[ *[0-9]+\.[0-9]+\] ') &
else
    tail -n +1 -f "$out/console.log" &
fi
tail_pid=$!
set +e
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 "${qemu_args[@]}" -append "$append" \
    -serial "file:$out/console.log" -serial "file:$out/out.log" </dev/null
qemu_rc=$?
set -e
sleep 0.2; kill "$tail_pid" 2>/dev/null || true; wait "$tail_pid" 2>/dev/null || true

verdict() { echo "vm: $*" | tee -a "$out/verdict.log" >&2; }

# Split ttyS1 into the saved dmesg and the exit status.
rc=""
if [ -f "$out/out.log" ]; then
    # The serial line ends lines with CR LF.
    tr -d '\r' < "$out/out.log" > "$out/out.log.tmp" && mv "$out/out.log.tmp" "$out/out.log"
    sed -n '/^==WARPQ-DMESG-BEGIN==$/,/^==WARPQ-DMESG-END==$/p' "$out/out.log" | sed '1d;$d' > "$out/dmesg.log"
    rc=$(sed -n 's/^==WARPQ-EXIT \([0-9]*\)==$/\1/p' "$out/out.log" | tail -n 1)
fi

status=0
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
    verdict "guest did not finish within VM_TIMEOUT=${timeout_s}s (last console lines below)"
    tail -n 20 "$out/console.log" >&2
    status=124
fi

# Kernel splats: the patterns of vm/splat-patterns.txt (shared with stress/),
# fixed substrings of the kernel's timestamped log lines.
splat_list=$(mktemp); splat_skip=$(mktemp)
sed -n 's/^"\(.*\)"$/\1/p' "$here/splat-patterns.txt" > "$splat_list"
sed -n 's/^!"\(.*\)"$/\1/p' "$here/splat-patterns.txt" > "$splat_skip"
offending=$(cat "$out/console.log" "$out/dmesg.log" 2>/dev/null | tr -d '\r' \
    | grep -E '^\[ *[0-9]+\.[0-9]+\] ' | grep -F -f "$splat_list" | grep -v -F -f "$splat_skip" | head -n 1 || true)
rm -f "$splat_list" "$splat_skip"
# kmemleak's report itself (written by init to ttyS1) has no timestamp.
leak=$(grep -m1 -E '^unreferenced object 0x' "$out/out.log" 2>/dev/null || true)
if [ -n "$offending" ]; then
    # A splat before user space started cannot be warpq's (the module is
    # loaded by init). One such boot-time report, in the guest's early IRQ
    # setup, was seen about once in thirty TCG boots under load (see
    # docs/harness.md): retry that boot once, loudly, instead of failing a
    # run for a kernel flake; a second occurrence fails the run.
    init_line=$(grep -n -m1 'Run /init as init process' "$out/dmesg.log" 2>/dev/null | cut -d: -f1)
    splat_line=$(grep -n -m1 -F "$offending" "$out/dmesg.log" 2>/dev/null | cut -d: -f1)
    if [ -z "${WARPQ_VM_RETRY:-}" ] && [ -n "$init_line" ] && [ -n "$splat_line" ] && [ "$splat_line" -lt "$init_line" ]; then
        verdict "boot-time splat before init (not warpq: its module was not loaded yet): $offending"
        verdict "retrying this boot once; the flaky boot's logs are kept as *.boot-flake"
        for f in console.log dmesg.log out.log; do mv "$out/$f" "$out/$f.boot-flake"; done
        mv "$out/verdict.log" "$out/verdict.log.boot-flake"
        rm -rf "$run_dir"
        WARPQ_VM_RETRY=1 exec "$0" "$@"
    fi
    verdict "kernel log shows a splat: $offending"
    [ "$status" != 0 ] || status=1
elif [ -n "$leak" ]; then
    verdict "kmemleak reports a leak: $leak"
    [ "$status" != 0 ] || status=1
fi

if [ -z "$rc" ]; then
    [ "$status" != 0 ] || verdict "guest ended without reporting the command's exit status (crash or panic?)"
    [ "$status" != 0 ] || status=1
elif [ "$status" = 0 ]; then
    status=$rc
    [ "$rc" = 0 ] || verdict "command exited with status $rc"
fi
if [ "${VM_QUIET:-0}" = 1 ] && [ -z "$offending" ] && [ -z "$leak" ] && [ -n "$rc" ]; then
    echo "vm: kernel log clean: no splat, no leak ($(wc -l < "$out/dmesg.log") lines in dmesg.log)" >&2
fi
echo "vm: logs in $out (console.log, dmesg.log, out.log)" >&2
exit "$status"
