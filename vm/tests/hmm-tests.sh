#!/bin/sh
# The kernel's own hmm-tests against test_hmm.ko: a check that the VM and
# the debug kernel are sound. Known failures on this 6.12 TCG guest are
# listed in docs/harness.md; anything else failing, or fewer passes, fails.
. /warpq/tests/lib.sh
expected_failures=" anon_write_huge exclusive exclusive_mprotect exclusive_cow "
min_pass=23
insmod /lib/modules/test_hmm.ko || fail "insmod test_hmm.ko"
hmm-tests > /tmp/hmm.log 2>&1
cat /tmp/hmm.log
totals=$(grep '^# Totals:' /tmp/hmm.log) || fail "hmm-tests printed no totals"
echo "hmm-tests: $totals"
pass=$(echo "$totals" | sed -n 's/.*pass:\([0-9]*\).*/\1/p')
[ "${pass:-0}" -ge "$min_pass" ] || fail "hmm-tests passed $pass, expected at least $min_pass"
unexpected=""
for t in $(grep -E '^not ok [0-9]+ ' /tmp/hmm.log | grep -v '# SKIP' | sed -E 's/^not ok [0-9]+ //; s/ .*//; s/.*\.//'); do
    case "$expected_failures" in *" $t "*) echo "expected failure: $t" ;; *) unexpected="$unexpected $t" ;; esac
done
[ -z "$unexpected" ] || fail "unexpected hmm-tests failures:$unexpected"
echo "ok: hmm-tests ($pass passed, only the documented failures)"
rmmod test_hmm || fail "rmmod test_hmm"
check "pins balanced after hmm-tests" warpq-check pins
