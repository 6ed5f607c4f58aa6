#!/usr/bin/env bash
# Install what warpq needs on a Debian 12 machine, and nothing when it is all
# there (a quick no-op: one dpkg-query and one version check).
set -euo pipefail
cache=${WARPQ_CACHE:-$HOME/.cache/warpq}

packages=(linux-source-6.12 rustc-web rust-web-src clang lld llvm libclang-dev
          flex bison bc libelf-dev libssl-dev cpio kmod patch xz-utils rsync
          qemu-system-x86 busybox-static stress-ng trace-cmd libc6-dev gcc make)

missing=()
installed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${packages[@]}" 2>/dev/null || true)
for p in "${packages[@]}"; do
    grep -q "^$p ii" <<<"$installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    log=$(mktemp)
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
           $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"
        echo "deps: apt-get failed (above)" >&2; exit 1
    fi
    rm -f "$log"
fi

# bindgen-cli for the kernel's Rust bindings (>= 0.65.1), kept in the cache so
# that it is not reinstalled per clone.
bindgen=$cache/tools/bin/bindgen
if ! "$bindgen" --version >/dev/null 2>&1; then
    command -v cargo >/dev/null || { echo "deps: cargo (rustup) is required to install bindgen-cli" >&2; exit 1; }
    echo "deps: installing bindgen-cli into $cache/tools"
    mkdir -p "$cache/tools"
    cargo install --quiet --locked bindgen-cli --root "$cache/tools"
fi
