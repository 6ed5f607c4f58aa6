#!/usr/bin/env bash
# Build the kernel's own tools/testing/selftests/mm/hmm-tests as a static
# binary against the headers of the cached debug kernel: the VM suite runs it
# against test_hmm.ko as a check that the VM and the debug kernel are sound.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
objdir=$("$here/kernel.sh" --dir debug)
src=$(readlink -f "$objdir/source")
out=$objdir/warpq-hmm-tests
[ -x "$out/hmm-tests" ] && exit 0
mkdir -p "$out"
make -s -C "$src" O="$objdir" LLVM=1 INSTALL_HDR_PATH="$out/headers" headers_install >/dev/null
gcc -static -O2 -Wno-unused-result -isystem "$out/headers/include" -I "$src" \
    -I "$src/tools/testing/selftests" -I "$src/tools/include/uapi" \
    "$src/tools/testing/selftests/mm/hmm-tests.c" -o "$out/hmm-tests.tmp" -lpthread
mv "$out/hmm-tests.tmp" "$out/hmm-tests"
echo "hmm-tests: built $out/hmm-tests"
