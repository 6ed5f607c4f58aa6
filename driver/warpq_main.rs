// SPDX-License-Identifier: GPL-2.0

//! warpq: user-mapped accelerator queues for devices without SVA.
//!
//! The driver binds QEMU's `edu` PCI device (1234:11e8), the stand-in for a
//! non-SVA accelerator behind an IOMMU. See `docs/` in the warpq tree.

use kernel::ffi::c_int;

use kernel::prelude::*;

mod pci;
mod shim;

use pci::{DmaTranslation, PciDevice};
use shim::PciDevRaw;

module! {
    type: Warpq,
    name: "warpq",
    author: "warpq developers",
    description: "User-mapped accelerator queues for devices without SVA",
    license: "GPL",
}

/// The edu device's DMA engine addresses 28 bits.
const EDU_DMA_BITS: u32 = 28;

/// The software command engine reaches any bus address.
const ENGINE_DMA_BITS: u32 = 64;

/// The DMA mask for a device whose DMA is translated as `translation`.
///
/// Behind an IOMMU the 28-bit IOVA space (256 MiB) is what both the software
/// engine and the edu DMA engine see, so the edu limit applies. Without one
/// (dma-direct), a 28-bit mask would bounce every page above 256 MiB through
/// swiotlb, and the device would work on copies of the user's pages instead
/// of the pages themselves; there the software engine's 64-bit reach is used
/// and edu DMA is refused for addresses it cannot reach.
fn dma_mask_bits(translation: DmaTranslation) -> u32 {
    match translation {
        DmaTranslation::Direct | DmaTranslation::IommuIdentity => ENGINE_DMA_BITS,
        _ => EDU_DMA_BITS,
    }
}

/// One bound device.
struct WarpqDevice {
    pdev: PciDevice,
}

impl WarpqDevice {
    fn probe(pdev: PciDevice) -> Result<KBox<Self>> {
        pdev.enable()?;
        // From here on, dropping `Self` (also when the allocation fails and
        // `KBox::new` drops its argument) disables the device again.
        let dev = KBox::new(Self { pdev }, GFP_KERNEL)?;
        let (vendor, device, revision) = dev.pdev.ids();
        let (group, translation) = dev.pdev.dma_translation();
        let mask_bits = dma_mask_bits(translation);
        dev.pdev.set_dma_mask(mask_bits)?;
        match group {
            Some(group) => pr_info!(
                "{}: bound {:04x}:{:04x} rev {}, dma mask {} bits, iommu group {}, {}\n",
                dev.pdev.name(), vendor, device, revision, mask_bits, group, translation.name()
            ),
            None => pr_info!(
                "{}: bound {:04x}:{:04x} rev {}, dma mask {} bits, no iommu: {}\n",
                dev.pdev.name(), vendor, device, revision, mask_bits, translation.name()
            ),
        }
        Ok(dev)
    }
}

impl Drop for WarpqDevice {
    fn drop(&mut self) {
        self.pdev.disable();
        pr_info!("{}: unbound\n", self.pdev.name());
    }
}

/// Called by the shim's `pci_driver.probe`.
#[no_mangle]
extern "C" fn warpq_rs_probe(raw: *mut PciDevRaw) -> c_int {
    // SAFETY: the PCI core calls probe with a valid device that stays bound
    // until remove, where the `WarpqDevice` owning this view is dropped.
    let pdev = match unsafe { PciDevice::from_raw(raw) } {
        Ok(pdev) => pdev,
        Err(e) => return e.to_errno(),
    };
    match WarpqDevice::probe(pdev) {
        Ok(dev) => {
            let dev = KBox::into_raw(dev);
            // SAFETY: `dev` was just made from a live box; `warpq_rs_remove`
            // turns it back into one.
            unsafe { &(*dev).pdev }.set_drvdata(dev.cast());
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// Called by the shim's `pci_driver.remove`.
#[no_mangle]
extern "C" fn warpq_rs_remove(raw: *mut PciDevRaw) {
    // SAFETY: the PCI core calls remove with the device it probed.
    let dev = unsafe { pci::take_drvdata(raw) }.cast::<WarpqDevice>();
    if !dev.is_null() {
        // SAFETY: probe stored a pointer from `KBox::into_raw` and
        // `take_drvdata` cleared it, so this is the only owner.
        drop(unsafe { KBox::from_raw(dev) });
    }
}

struct Warpq {
    _driver: pci::DriverRegistration,
}

impl kernel::Module for Warpq {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("loaded\n");
        Ok(Self { _driver: pci::DriverRegistration::new()? })
    }
}
