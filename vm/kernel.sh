#!/usr/bin/env bash
# Build (or find in the cache) warpq's guest kernel.
#
#   vm/kernel.sh FLAVOUR          build debug|perf, print nothing but progress
#   vm/kernel.sh --dir FLAVOUR    print the build directory (O=) of FLAVOUR
#
# Layout of the cache ($WARPQ_CACHE, default ~/.cache/warpq):
#   src/<srckey>/           Debian's linux-source-6.12, extracted, vm/patches applied
#   build/<flavour>-<key>/  O= build tree: .config, bzImage, modules_prepare done
# <key> hashes the source version, the patches, the config fragments and the
# toolchain versions, so an unchanged tree never rebuilds and a changed one
# never reuses a stale build.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
cache=${WARPQ_CACHE:-$HOME/.cache/warpq}
tarball=/usr/src/linux-source-6.12.tar.xz

print_dir=0
if [ "${1:-}" = "--dir" ]; then print_dir=1; shift; fi
flavour=${1:?usage: kernel.sh [--dir] debug|perf}
case "$flavour" in debug|perf) ;; *) echo "kernel.sh: unknown flavour '$flavour'" >&2; exit 2 ;; esac

# The kernel is built with Debian's rustc (not rustup's) and clang/LLVM.
rustc_bin=/usr/bin/rustc
bindgen_bin=$cache/tools/bin/bindgen
kmake_vars=(LLVM=1 "RUSTC=$rustc_bin" "RUSTDOC=/usr/bin/rustdoc" "BINDGEN=$bindgen_bin")

src_version=$(dpkg-query -W -f='${Version}' linux-source-6.12)
patches=$(ls "$here"/patches/*.patch 2>/dev/null | sort || true)
srckey=$( { echo "$src_version"; for p in $patches; do sha256sum "$p"; done; } | sha256sum | cut -c1-12)
key=$( { echo "$srckey"; cat "$here/config/base.config" "$here/config/$flavour.config";
         "$rustc_bin" --version; "$bindgen_bin" --version 2>/dev/null || true; clang --version | head -1; } \
       | sha256sum | cut -c1-12)
srcdir=$cache/src/$srckey
objdir=$cache/build/$flavour-$key

if [ "$print_dir" = 1 ]; then echo "$objdir"; exit 0; fi

if [ -f "$objdir/.warpq-built" ]; then
    echo "kernel: $flavour up to date ($objdir)"
    exit 0
fi

# 1. Source: extract once per (version, patches).
if [ ! -f "$srcdir/.warpq-extracted" ]; then
    echo "kernel: extracting $tarball ($src_version) into $srcdir"
    rm -rf "$srcdir" && mkdir -p "$srcdir"
    tar -C "$srcdir" --strip-components=1 -xf "$tarball"
    for p in $patches; do
        echo "kernel: applying $(basename "$p")"
        patch -d "$srcdir" -p1 --quiet < "$p"
    done
    touch "$srcdir/.warpq-extracted"
fi

# 2. Configure: tinyconfig + base + flavour, then check that every option
#    the fragments ask for survived Kconfig's dependency resolution.
mkdir -p "$objdir"
frag=$objdir/warpq.config
cat "$here/config/base.config" "$here/config/$flavour.config" > "$frag"
make -s -C "$srcdir" O="$objdir" "${kmake_vars[@]}" tinyconfig >/dev/null
KCONFIG_CONFIG="$objdir/.config" "$srcdir/scripts/kconfig/merge_config.sh" -m -O "$objdir" \
    "$objdir/.config" "$frag" >/dev/null
make -s -C "$srcdir" O="$objdir" "${kmake_vars[@]}" olddefconfig >/dev/null

missing=0
while IFS= read -r line; do
    case "$line" in CONFIG_*=*) ;; *) continue ;; esac
    opt=${line%%=*}; want=${line#*=}
    if [ "$want" = n ]; then
        if grep -Eq "^$opt=(y|m)$" "$objdir/.config"; then
            echo "kernel: $opt should be off but is $(grep "^$opt=" "$objdir/.config")" >&2; missing=1
        fi
    elif ! grep -qx "$opt=$want" "$objdir/.config"; then
        got=$(grep -E "^(# )?$opt[= ]" "$objdir/.config" || echo "absent")
        echo "kernel: $opt=$want requested, got: $got" >&2; missing=1
    fi
done < "$frag"
if [ "$missing" = 1 ]; then
    echo "kernel: the configuration does not hold what vm/config asks for (see above)" >&2
    exit 1
fi

# 3. Build the image and prepare the tree for out-of-tree (Rust) modules.
# The compiler's output (the kernel's own -Wframe-larger-than warnings and
# the like) goes to a log in the cache; the console gets a progress line a
# minute.
log=$objdir/build.log
echo "kernel: building $flavour in $objdir: about 6 minutes (perf) to 8 (debug) on 2 cores; log: $log"
start=$(date +%s)
( make -C "$srcdir" O="$objdir" "${kmake_vars[@]}" -j"$(nproc)" bzImage modules &&
  make -C "$srcdir" O="$objdir" "${kmake_vars[@]}" -j"$(nproc)" modules_prepare ) > "$log" 2>&1 &
build=$!
last=$start
while kill -0 "$build" 2>/dev/null; do
    sleep 2
    now=$(date +%s)
    if [ $((now - last)) -ge 60 ]; then
        last=$now
        echo "kernel: building $flavour: $((now - start)) s, $(grep -c '^  [A-Z]' "$log") steps done"
    fi
done
if ! wait "$build"; then
    tail -n 40 "$log" >&2
    echo "kernel: the $flavour build failed (last lines above; whole log: $log)" >&2
    exit 1
fi
# test_hmm.ko and other in-tree modules go where the initramfs builder finds them.
rm -rf "$objdir/modules-install"
make -s -C "$srcdir" O="$objdir" "${kmake_vars[@]}" INSTALL_MOD_PATH="$objdir/modules-install" \
    INSTALL_MOD_STRIP=1 modules_install >/dev/null
echo "kernel: $flavour built in $(( $(date +%s) - start )) s"
touch "$objdir/.warpq-built"
