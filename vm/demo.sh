#!/usr/bin/env bash
# `make demo`: boot the debug kernel with warpq.ko and show what the driver
# found and does. Grows with the driver.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
VM_OUT=${VM_OUT:-$(cd "$here/.." && pwd)/target/vm/demo} exec "$here/run.sh" '
echo "--- warpq demo: kernel $(uname -r)"
echo "--- what warpq.ko logged when it bound the device:"
dmesg | grep "warpq"
echo "--- warpqctl list:"
warpqctl list
echo "--- the device, its IOMMU group and the DMAR unit behind it:"
for d in /sys/bus/pci/drivers/warpq/0000:*; do
    echo "$(basename $d): vendor $(cat $d/vendor) device $(cat $d/device) iommu_group $(basename $(readlink $d/iommu_group))"
done
dmesg | grep -E "DMAR: (IOMMU enabled|Intel\(R\) Virtualization)" | head -n 3
'
