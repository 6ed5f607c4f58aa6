# Sourced by the guest test scripts: small assertion helpers that say what
# failed and stop the script with a non-zero status.
fail() { echo "FAIL: $*"; exit 1; }
check() { # check "what" command...
    local what=$1; shift
    if "$@"; then echo "ok: $what"; else fail "$what"; fi
}
