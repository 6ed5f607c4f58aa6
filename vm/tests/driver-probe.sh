#!/bin/sh
# warpq.ko binds the edu device, logs how its DMA is translated, and unloads
# and reloads cleanly. Expects VM_IOMMU as the first argument (on|off) and the
# number of rmmod/insmod rounds as the second (default 100).
. /warpq/tests/lib.sh
iommu=${1:-on}
probe_re='warpq: [0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]: bound 1234:11e8'
check "probe line logged" sh -c "dmesg | grep -Eq '$probe_re'"
check "edu device listed under the driver" sh -c "ls /sys/bus/pci/drivers/warpq | grep -Eq '^[0-9a-f]{4}:'"
check "warpqctl list finds it" warpqctl list
check "/dev/warpq0 is a character device" test -c /dev/warpq0
check "sysfs: dma_translation" sh -c "grep -q dma- /sys/class/misc/warpq0/dma_translation"
check "sysfs: stats" sh -c "grep -q '^commands_ok 0$' /sys/class/misc/warpq0/stats"
check "module parameter: policy defaults to filtered" sh -c "[ \$(cat /sys/module/warpq/parameters/policy) = filtered ]"
if [ "$iommu" = on ]; then
    check "DMA goes through the IOMMU (dma-iommu, own group)" sh -c "dmesg | grep -E '$probe_re' | grep -q 'iommu group [0-9]*, dma-iommu'"
else
    check "DMA is dma-direct without an IOMMU" sh -c "dmesg | grep -E '$probe_re' | grep -q 'dma-direct'"
fi
# An open file holds the module: rmmod is refused.
exec 3<>/dev/warpq0
if rmmod warpq 2>/dev/null; then fail "rmmod succeeded with /dev/warpq0 open"; fi
echo "ok: rmmod refused while /dev/warpq0 is open"
exec 3<&-
rounds=${2:-100}
i=0
while [ $i -lt $rounds ]; do
    i=$((i + 1))
    rmmod warpq || fail "rmmod warpq (round $i)"
    [ ! -e /sys/bus/pci/drivers/warpq ] || fail "driver still registered after rmmod (round $i)"
    insmod /lib/modules/warpq.ko || fail "insmod warpq.ko (round $i)"
done
echo "ok: rmmod/insmod $rounds times"
check "bound again after every reload" sh -c "[ \$(dmesg | grep -Ec '$probe_re') -eq $((rounds + 1)) ]"
check "unbind logged on every rmmod" sh -c "[ \$(dmesg | grep -c 'warpq: .*: unbound') -eq $rounds ]"
check "the device still works after the reloads" warpq-copy-check 200
check "sysfs stats count the commands" sh -c "grep -q '^commands_ok 200$' /sys/class/misc/warpq0/stats"
