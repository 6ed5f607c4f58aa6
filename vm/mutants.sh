#!/usr/bin/env bash
# Deliberately broken drivers must be caught. Each vm/mutants/NAME.patch
# plants one bug that the design exists to prevent; this script builds
# warpq.ko with it (target/mutants/NAME/), boots the debug kernel, swaps the
# module in, and runs the checks. A mutant is caught when the run fails (a
# check fails, the kernel log shows a splat, or it hangs past VM_TIMEOUT).
#
#   vm/mutants.sh [NAME...]     (default: every patch in vm/mutants/)
#
# Exit status 0 only if every mutant was caught. Needs `make initramfs`.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
cd "$top"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=($(cd "$here/mutants" && ls *.patch | sed 's/\.patch$//'))
# What must catch them: commands in flight through munmap and fork, a
# queue driven by the ring alone after a teardown, the fork/exec storm. The
# unchanged driver (the control) must pass the very same checks.
checks='warpq-invalidate-check munmap && warpq-invalidate-check fork &&
warpq-invalidate-check touch && warpq-stress-suite --seconds 40 storm && warpq-check pins'
missed=()
mkdir -p target/mutants
echo "=== control: the driver as it is"
rm -rf target/mutants/control
make -s module MODULE_DIR=target/mutants/control > target/mutants/control.build.log 2>&1 || { tail target/mutants/control.build.log; exit 1; }
mkdir -p target/mutants/control/extra && cp target/mutants/control/driver/warpq.ko target/mutants/control/extra/
if ! VM_EXTRA="$top/target/mutants/control/extra" VM_OUT="$top/target/mutants/control/vm" VM_TIMEOUT=${VM_TIMEOUT:-600} \
        "$here/run.sh" "rmmod warpq && insmod /extra/warpq.ko && $checks" > target/mutants/control.log 2>&1; then
    echo "the unchanged driver fails these checks: no mutant can be judged"; grep -E '^(FAIL|vm: )' target/mutants/control.log | head
    exit 1
fi
echo "control passes"

for name in "${names[@]}"; do
    dir=target/mutants/$name
    rm -rf "$dir"
    echo "=== mutant $name: $(grep -m1 'MUTANT:' "$here/mutants/$name.patch" | sed 's/.*MUTANT: //')"
    if ! make -s module MODULE_DIR="$dir" MODULE_PATCH="vm/mutants/$name.patch" > "$dir.build.log" 2>&1; then
        echo "build failed:"; tail -n 20 "$dir.build.log"; missed+=("$name"); continue
    fi
    mkdir -p "$dir/extra" && cp "$dir/driver/warpq.ko" "$dir/extra/"
    VM_EXTRA="$top/$dir/extra" VM_OUT="$top/$dir/vm" VM_TIMEOUT=${VM_TIMEOUT:-600} "$here/run.sh" \
        "rmmod warpq && insmod /extra/warpq.ko && $checks" > "$dir/run.log" 2>&1
    rc=$?
    if [ "$rc" = 0 ]; then
        echo "NOT CAUGHT: $name (every check passed; log: $dir/run.log)"; missed+=("$name")
    else
        echo "caught: $name (status $rc)"
        grep -E '^(FAIL|vm: )' "$dir/run.log" | grep -v 'vm: logs in' | head -n 4 | sed 's/^/    /'
    fi
done
[ ${#missed[@]} -eq 0 ] && echo "all ${#names[@]} mutants caught" || echo "missed: ${missed[*]}"
[ ${#missed[@]} -eq 0 ]
