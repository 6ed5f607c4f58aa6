#!/bin/sh
# Runs one guest command under several module configurations in one boot:
#
#   /warpq/tests/matrix.sh "pin mirror" "filtered strict" 'command'
#
# For each backing and each policy, warpq.ko is reloaded with
# `backing=B policy=P` (plus $WARPQ_MATRIX_ARGS) and the command runs; the
# first failure stops the script with its status. One boot instead of one
# per configuration: a reload takes a second, a boot of the debug kernel
# about a minute.
backings=$1 policies=$2 cmd=$3
for backing in $backings; do
    for policy in $policies; do
        echo "=== matrix: backing=$backing policy=$policy"
        rmmod warpq 2>/dev/null
        # shellcheck disable=SC2086
        insmod /lib/modules/warpq.ko backing="$backing" policy="$policy" $WARPQ_MATRIX_ARGS || exit 1
        sh -c "$cmd" || { echo "=== matrix: FAILED under backing=$backing policy=$policy"; exit 1; }
    done
done
