#!/usr/bin/env bash
# Build the base initramfs of one kernel flavour:
#   target/initramfs/base-<flavour>.cpio.gz
# holding busybox, warpq.ko, the kernel's own test modules (test_hmm), the
# workspace's guest programs, hmm-tests, stress-ng and trace-cmd with their
# shared libraries, and the init script. vm/run.sh appends a small per-run
# archive (the command, VM_EXTRA) to it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
flavour=${1:?usage: initramfs.sh debug|perf}
objdir=$("$here/kernel.sh" --dir "$flavour")
module=$top/target/module/$flavour/driver/warpq.ko
guest_bins=$top/target/x86_64-unknown-linux-gnu/release
out=$top/target/initramfs/base-$flavour.cpio.gz

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,proc,sys,dev,tmp,root,run,etc} \
         "$root"/lib/modules "$root"/warpq/bin

cp /bin/busybox "$root/bin/busybox"
cp "$here/guest/init" "$root/init"
cp "$here/guest/probe" "$root/warpq/probe"
mkdir -p "$root/warpq/tests" && cp "$here"/tests/*.sh "$root/warpq/tests/"
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"

# Copy a dynamically linked program and the shared libraries it needs, at
# the paths the dynamic loader will look for them.
copy_with_libs() {
    local bin=$1 dest=$2
    cp "$bin" "$root$dest"
    ldd "$bin" 2>/dev/null | grep -oE '/[^ ]+' | while read -r lib; do
        [ -e "$root$lib" ] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}
copy_with_libs /usr/bin/stress-ng /usr/bin/stress-ng
copy_with_libs /usr/bin/trace-cmd /usr/bin/trace-cmd

[ -f "$module" ] || { echo "initramfs: $module missing; run 'make module'" >&2; exit 1; }
cp "$module" "$root/lib/modules/warpq.ko"
# perf only: the same module with its tracepoint calls compiled out (`make
# module-notrace`), for make bench's tracepoint cost; skipped when not built
# or when a source is newer than it (stale).
notrace=$top/target/module/$flavour-notrace/driver/warpq.ko
if [ "$flavour" = perf ] && [ -f "$notrace" ]; then
    if [ -z "$(find "$top/driver" "$top/notifier/src" -type f -newer "$notrace" -print -quit)" ]; then
        cp "$notrace" "$root/lib/modules/warpq-notrace.ko"
    else
        echo "initramfs: $notrace is older than the driver's sources: not packed (make module-notrace VM_KERNEL=perf)" >&2
    fi
fi

# In-tree test modules of this flavour (test_hmm.ko on the debug kernel).
find "$objdir/modules-install" -name 'test_hmm.ko*' -exec cp {} "$root/lib/modules/" \; 2>/dev/null || true

# The workspace's guest programs (statically linked by the Makefile).
if [ -d "$guest_bins" ]; then
    find "$guest_bins" -maxdepth 1 -type f -perm -u+x -exec cp {} "$root/warpq/bin/" \;
    # The user crate's examples, runnable as warpq-example-<name>.
    for ex in "$guest_bins"/examples/*; do
        name=$(basename "$ex")
        case "$name" in *.d|*-*) continue ;; esac   # skip dep files and hashed copies
        if [ -f "$ex" ] && [ -x "$ex" ]; then cp "$ex" "$root/warpq/bin/warpq-example-$name"; fi
    done
fi
# The C example, built against the uapi header alone (as a C user would).
gcc -O2 -Wall -Wextra -Werror -static -I "$top/driver/uapi" -o "$root/warpq/bin/warpq-c-submit" \
    "$top/user/examples/c/submit.c"
# The kernel's hmm-tests, built against this kernel's headers.
hmm=$objdir/warpq-hmm-tests/hmm-tests
[ -f "$hmm" ] && cp "$hmm" "$root/warpq/bin/hmm-tests"

mkdir -p "$(dirname "$out")"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp"
mv "$out.tmp" "$out"
echo "initramfs: $out ($(du -h "$out" | cut -f1))"
