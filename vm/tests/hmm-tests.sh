#!/bin/sh
# The kernel's own hmm-tests against test_hmm.ko: a check that the VM and
# the debug kernel are sound. On our debug config every test that is not
# skipped passes (see docs/harness.md for why tests skip), so any failure,
# or fewer passes, fails this suite.
. /warpq/tests/lib.sh
min_pass=29
# The hugetlbfs tests need huge pages in the pool.
echo 8 > /proc/sys/vm/nr_hugepages || fail "nr_hugepages"
insmod /lib/modules/test_hmm.ko || fail "insmod test_hmm.ko"
hmm-tests > /tmp/hmm.log 2>&1
cat /tmp/hmm.log
totals=$(grep '^# Totals:' /tmp/hmm.log) || fail "hmm-tests printed no totals"
echo "hmm-tests: $totals"
pass=$(echo "$totals" | sed -n 's/.* pass:\([0-9]*\) .*/\1/p')
failed_tests=$(grep -E '^not ok [0-9]+ ' /tmp/hmm.log | grep -v '# SKIP' | sed -E 's/^not ok [0-9]+ //' | tr '\n' ' ')
[ -z "$failed_tests" ] || fail "hmm-tests failures: $failed_tests"
[ "${pass:-0}" -ge "$min_pass" ] || fail "hmm-tests passed ${pass:-none}, expected at least $min_pass"
echo "ok: hmm-tests ($pass passed, $(grep -c '# SKIP' /tmp/hmm.log) skipped, none failed)"
rmmod test_hmm || fail "rmmod test_hmm"
check "pins balanced after hmm-tests" warpq-check pins
