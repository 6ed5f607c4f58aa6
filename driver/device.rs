// SPDX-License-Identifier: GPL-2.0

//! One bound device: its PCI function, its character device `/dev/warpqN`,
//! and what every queue of it shares.

use core::sync::atomic::{AtomicU32, Ordering};

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::edu::EduDma;
use crate::stats::Counters;
use crate::glue::misc::MiscRegistration;
use crate::glue::pci::{DmaTranslation, PciDevice};

/// The edu device's DMA engine addresses 28 bits.
const EDU_DMA_BITS: u32 = 28;

/// The software command engine reaches any bus address.
const ENGINE_DMA_BITS: u32 = 64;

/// Device numbers for `/dev/warpqN`, in probe order.
static NEXT_INDEX: AtomicU32 = AtomicU32::new(0);

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

/// What the queues of a device share; outlives the binding while files are
/// open (they hold an `Arc`).
#[pin_data(PinnedDrop)]
pub(crate) struct DeviceCore {
    /// The device's DMA engine (BAR 0); dropped before `pdev`.
    #[pin]
    pub(crate) edu: EduDma,
    pub(crate) pdev: PciDevice,
    pub(crate) index: u32,
    pub(crate) translation: DmaTranslation,
    /// The sum over the device's queues, past and present.
    pub(crate) stats: Counters,
}

/// One bound device (the PCI driver data).
pub(crate) struct WarpqDevice {
    /// Declared (so dropped) first: no open can start once it is gone.
    _misc: MiscRegistration,
    core: Arc<DeviceCore>,
}

impl WarpqDevice {
    pub(crate) fn probe(pdev: PciDevice) -> Result<KBox<Self>> {
        pdev.enable()?;
        let (vendor, device, revision) = pdev.ids();
        let (group, translation) = pdev.dma_translation();
        let mask_bits = dma_mask_bits(translation);
        if let Err(e) = pdev.set_dma_mask(mask_bits) {
            pdev.disable();
            return Err(e);
        }
        let bar = match pdev.map_bar0() {
            Ok(bar) => bar,
            Err(e) => {
                pdev.disable();
                return Err(e);
            }
        };
        let index = NEXT_INDEX.fetch_add(1, Ordering::Relaxed);
        let core = Arc::pin_init(
            pin_init!(DeviceCore { edu <- EduDma::new(bar), pdev, index, translation, stats: Counters::default() }),
            GFP_KERNEL,
        )?;
        // From here on, dropping `core` (its last reference) disables the device.
        let misc = MiscRegistration::register(index, &core)?;
        let id = core.edu.id();
        match group {
            Some(group) => pr_info!(
                "{}: bound {:04x}:{:04x} rev {} (edu id {:#010x}), dma mask {} bits, iommu group {}, {}, /dev/warpq{}\n",
                core.pdev.name(), vendor, device, revision, id, mask_bits, group, translation.name(), index
            ),
            None => pr_info!(
                "{}: bound {:04x}:{:04x} rev {} (edu id {:#010x}), dma mask {} bits, no iommu: {}, /dev/warpq{}\n",
                core.pdev.name(), vendor, device, revision, id, mask_bits, translation.name(), index
            ),
        }
        Ok(KBox::new(Self { _misc: misc, core }, GFP_KERNEL)?)
    }
}

#[pinned_drop]
impl PinnedDrop for DeviceCore {
    fn drop(self: Pin<&mut Self>) {
        self.pdev.disable();
        pr_info!("{}: unbound\n", self.pdev.name());
    }
}

impl Drop for WarpqDevice {
    fn drop(&mut self) {
        // `_misc` is dropped after this: no new open; open files keep `core`.
        pr_debug!("warpq{}: removing\n", self.core.index);
    }
}
