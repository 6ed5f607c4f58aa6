#!/usr/bin/env bash
# The quick gate (`make check`, and the host part of `make test`): format,
# lints, the generated ABI, host tests, loom models, the size rules of
# stress/ and the warpq crate's package. One line per lane, then
# `N passed, N failed`.
#
#   vm/check.sh            every lane
#   vm/check.sh LANE...    some: fmt clippy uapi tests loom shape package
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
cd "$top"
CARGO=${CARGO:-cargo}
logs=$top/target/check
mkdir -p "$logs"

lane_fmt() {
    # The workspace crates, then the driver (not a cargo crate: rustfmt
    # follows its `mod`s, the protocol core in notifier/src included).
    "$CARGO" fmt --all --check && rustfmt --check --config-path rustfmt.toml driver/warpq_main.rs
}
lane_clippy() { "$CARGO" clippy -q --workspace --all-targets --all-features -- -D warnings; }
lane_uapi() { "$CARGO" run -q -p warpq-uapi-gen -- --check; }
lane_tests() { "$CARGO" test -q --workspace --all-features; }
lane_loom() {
    RUSTFLAGS="--cfg loom" "$CARGO" test -q -p warpq-notifier --release --target-dir "$top/target/loom"
}
# The warpq crate packages (metadata, README, the files it ships) and the
# packaged copy builds on its own; offline: the lanes before fetched its
# dependencies.
lane_package() { "$CARGO" package -q -p warpq --allow-dirty --offline; }
# stress/ is a library plus thin programs: no source over 800 lines, no
# program over 200, and fork() only in the child-process harness.
lane_shape() {
    local bad=0 f n
    while IFS= read -r f; do
        n=$(wc -l < "$f")
        case "$f" in
            stress/src/bin/*) [ "$n" -le 200 ] || { echo "$f: $n lines (a program is at most 200)"; bad=1; } ;;
            *) [ "$n" -le 800 ] || { echo "$f: $n lines (a source file is at most 800)"; bad=1; } ;;
        esac
    done < <(find stress/src -name '*.rs' | sort)
    local forks
    forks=$(grep -rn 'fork()' stress/src | grep -v '^stress/src/harness/' || true)
    if [ -n "$forks" ]; then
        echo "fork() outside stress/src/harness/:"; echo "$forks"; bad=1
    fi
    return $bad
}

lanes=("$@")
[ ${#lanes[@]} -gt 0 ] || lanes=(fmt uapi clippy tests loom shape package)
passed=0; failed=0; summary=()
for lane in "${lanes[@]}"; do
    start=$SECONDS
    echo "=== check: $lane"
    "lane_$lane" 2>&1 | tee "$logs/$lane.log"
    if [ "${PIPESTATUS[0]}" = 0 ]; then
        passed=$((passed + 1)); summary+=("PASS  check: $lane ($((SECONDS - start))s)")
    else
        failed=$((failed + 1)); summary+=("FAIL  check: $lane ($((SECONDS - start))s)  log: target/check/$lane.log")
    fi
    echo "=== ${summary[-1]}"
done
echo
printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
