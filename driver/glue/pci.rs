// SPDX-License-Identifier: GPL-2.0

//! Safe glue over the PCI core, through the C shim: the driver registration
//! and a view of one bound `struct pci_dev`.

use core::ptr::NonNull;
use kernel::ffi::{c_int, c_void};

use kernel::error::to_result;
use kernel::prelude::*;
use kernel::str::CStr;

use crate::shim::{self, PciDevRaw};

/// The PCI driver (`warpq_pci_driver` in the shim) is registered while this
/// value lives; probe and remove come back through `warpq_rs_probe` and
/// `warpq_rs_remove`.
pub(crate) struct DriverRegistration(());

impl DriverRegistration {
    /// Registers the driver; the PCI core probes matching devices before this
    /// returns.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: no precondition; the shim's pci_driver is a static.
        to_result(unsafe { shim::warpq_pci_register_driver() })?;
        Ok(Self(()))
    }
}

impl Drop for DriverRegistration {
    fn drop(&mut self) {
        // SAFETY: registered in `new`; unregistering removes every bound
        // device (calling `warpq_rs_remove`) before it returns.
        unsafe { shim::warpq_pci_unregister_driver() };
    }
}

/// How the device's DMA addresses are translated.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum DmaTranslation {
    /// No IOMMU: dma-direct, bus address = physical address.
    Direct,
    /// dma-iommu with a DMA domain, IOTLB flushed on every unmap.
    IommuStrict,
    /// dma-iommu with a flush queue: IOTLB flushes are deferred.
    IommuLazy,
    /// The IOMMU is in pass-through for this device.
    IommuIdentity,
    /// Some other domain type (unmanaged, blocked, ...).
    IommuOther,
}

impl DmaTranslation {
    /// The name as a C string, for sysfs.
    pub(crate) fn c_name(self) -> &'static kernel::str::CStr {
        match self {
            Self::Direct => kernel::c_str!("dma-direct"),
            Self::IommuStrict => kernel::c_str!("dma-iommu (strict)"),
            Self::IommuLazy => kernel::c_str!("dma-iommu (lazy, flush queue)"),
            Self::IommuIdentity => kernel::c_str!("iommu identity (pass-through)"),
            Self::IommuOther => kernel::c_str!("iommu (other domain type)"),
        }
    }

    /// The name the driver logs and reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Direct => "dma-direct",
            Self::IommuStrict => "dma-iommu (strict)",
            Self::IommuLazy => "dma-iommu (lazy, flush queue)",
            Self::IommuIdentity => "iommu identity (pass-through)",
            Self::IommuOther => "iommu (other domain type)",
        }
    }
}

/// A PCI device bound to this driver.
///
/// # Invariants
///
/// `raw` points to a `struct pci_dev` on which this value holds a reference
/// (`pci_dev_get()`), so the structure stays valid as long as this value.
pub(crate) struct PciDevice {
    raw: NonNull<PciDevRaw>,
}

// SAFETY: a `struct pci_dev` may be used from any thread; the PCI core
// serialises probe and remove, and the shim's accessors take no locks that
// depend on the caller's context.
unsafe impl Send for PciDevice {}
// SAFETY: the accessors only read immutable identification fields or call
// PCI/DMA functions that are safe to call concurrently.
unsafe impl Sync for PciDevice {}

impl PciDevice {
    /// Wraps a device handed to probe, taking a reference on it.
    ///
    /// # Safety
    ///
    /// `raw` must be null or a valid `struct pci_dev`.
    pub(crate) unsafe fn from_raw(raw: *mut PciDevRaw) -> Result<Self> {
        let raw = NonNull::new(raw).ok_or(EINVAL)?;
        // SAFETY: `raw` is a valid device (this function's contract); the
        // reference taken here is dropped in `Drop`.
        unsafe { shim::warpq_pci_dev_get(raw.as_ptr()) };
        // INVARIANT: we hold a reference, so the `struct pci_dev` stays valid.
        Ok(Self { raw })
    }

    /// Another reference to the same device.
    pub(crate) fn clone_ref(&self) -> Self {
        // SAFETY: the device is valid (type invariant); the new value takes
        // its own reference.
        unsafe { shim::warpq_pci_dev_get(self.as_ptr()) };
        // INVARIANT: the reference was just taken.
        Self { raw: self.raw }
    }

    /// The `struct device` embedded in the PCI device.
    pub(crate) fn as_dev(&self) -> *mut shim::DeviceRaw {
        // SAFETY: the device is valid (type invariant).
        unsafe { shim::warpq_pci_to_dev(self.as_ptr()) }
    }

    fn as_ptr(&self) -> *mut PciDevRaw {
        self.raw.as_ptr()
    }

    /// The device's bus name, e.g. `0000:00:03.0`.
    pub(crate) fn name(&self) -> &CStr {
        // SAFETY: by the type invariant the device is valid; pci_name()
        // returns the NUL-terminated name embedded in it, which lives as long
        // as the device.
        unsafe { CStr::from_char_ptr(shim::warpq_pci_name(self.as_ptr())) }
    }

    /// Vendor, device and revision IDs from configuration space.
    pub(crate) fn ids(&self) -> (u16, u16, u8) {
        let (mut vendor, mut device, mut revision) = (0u16, 0u16, 0u8);
        // SAFETY: the device is valid (type invariant); the out-pointers
        // point to locals.
        unsafe { shim::warpq_pci_ids_of(self.as_ptr(), &mut vendor, &mut device, &mut revision) };
        (vendor, device, revision)
    }

    /// Enables the device and makes it a bus master. Undo with [`Self::disable`].
    pub(crate) fn enable(&self) -> Result {
        // SAFETY: the device is valid (type invariant).
        to_result(unsafe { shim::warpq_pci_enable(self.as_ptr()) })
    }

    /// Requests and maps BAR 0. Drop the result before the device.
    pub(crate) fn map_bar0(&self) -> Result<Bar0> {
        let mut err = 0;
        // SAFETY: the device is valid (type invariant).
        let ptr = unsafe { shim::warpq_pci_map_bar0(self.as_ptr(), &mut err) };
        let ptr = NonNull::new(ptr).ok_or_else(|| kernel::error::Error::from_errno(err))?;
        // INVARIANT: just requested and mapped.
        Ok(Bar0 { pdev: self.raw, ptr })
    }

    /// Turns bus mastering off: the device can start no more DMA (how a
    /// device that stopped answering is quiesced).
    pub(crate) fn clear_master(&self) {
        // SAFETY: the device is valid (type invariant) and was enabled.
        unsafe { shim::warpq_pci_clear_master(self.as_ptr()) };
    }

    /// Undoes [`Self::enable`].
    pub(crate) fn disable(&self) {
        // SAFETY: the device is valid (type invariant) and was enabled.
        unsafe { shim::warpq_pci_disable(self.as_ptr()) };
    }

    /// Sets the streaming and coherent DMA masks to `bits` bits.
    pub(crate) fn set_dma_mask(&self, bits: u32) -> Result {
        // SAFETY: the device is valid (type invariant), so is its embedded
        // `struct device`.
        to_result(unsafe { shim::warpq_dma_set_mask(shim::warpq_pci_to_dev(self.as_ptr()), bits) })
    }

    /// The device's IOMMU group (if any) and how its DMA is translated.
    pub(crate) fn dma_translation(&self) -> (Option<u32>, DmaTranslation) {
        let mut group: c_int = -1;
        // SAFETY: the device is valid (type invariant); `group` is a local.
        let kind = unsafe { shim::warpq_iommu_describe(shim::warpq_pci_to_dev(self.as_ptr()), &mut group) };
        let kind = match kind {
            shim::dma_kind::DIRECT => DmaTranslation::Direct,
            shim::dma_kind::IOMMU_STRICT => DmaTranslation::IommuStrict,
            shim::dma_kind::IOMMU_LAZY => DmaTranslation::IommuLazy,
            shim::dma_kind::IOMMU_IDENTITY => DmaTranslation::IommuIdentity,
            _ => DmaTranslation::IommuOther,
        };
        (u32::try_from(group).ok(), kind)
    }
}

/// Stores the driver's per-device data pointer.
///
/// # Safety
///
/// `raw` must be a valid `struct pci_dev` bound to this driver.
pub(crate) unsafe fn set_drvdata(raw: *mut PciDevRaw, data: *mut c_void) {
    // SAFETY: by the function's safety requirements.
    unsafe { shim::warpq_pci_set_drvdata(raw, data) };
}

/// BAR 0 of a device, requested and mapped; released on drop.
///
/// # Invariants
///
/// `ptr` is the `pci_iomap()` of BAR 0 of `pdev`, whose region we requested.
pub(crate) struct Bar0 {
    pdev: NonNull<PciDevRaw>,
    ptr: NonNull<c_void>,
}

// SAFETY: MMIO accessors may be used from any thread.
unsafe impl Send for Bar0 {}
// SAFETY: as above; callers serialise what must be serialised (the edu DMA).
unsafe impl Sync for Bar0 {}

impl Bar0 {
    /// Offsets must be 4-byte aligned registers inside the BAR.
    pub(crate) fn read32(&self, off: usize) -> u32 {
        // SAFETY: a register of the mapped BAR (type invariant).
        unsafe { shim::warpq_readl(self.ptr.as_ptr(), off as _) }
    }

    pub(crate) fn write32(&self, off: usize, val: u32) {
        // SAFETY: a register of the mapped BAR (type invariant).
        unsafe { shim::warpq_writel(self.ptr.as_ptr(), off as _, val) };
    }

    pub(crate) fn write64(&self, off: usize, val: u64) {
        // SAFETY: an 8-byte register of the mapped BAR (type invariant).
        unsafe { shim::warpq_writeq(self.ptr.as_ptr(), off as _, val) };
    }
}

impl Drop for Bar0 {
    fn drop(&mut self) {
        // SAFETY: mapped and requested in `PciDevice::map_bar0` (type
        // invariant); the device outlives this (the owner drops it first).
        unsafe { shim::warpq_pci_unmap_bar0(self.pdev.as_ptr(), self.ptr.as_ptr()) };
    }
}

impl Drop for PciDevice {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `from_raw` (type invariant).
        unsafe { shim::warpq_pci_dev_put(self.as_ptr()) };
    }
}

/// Takes back the driver data stored by [`PciDevice::set_drvdata`].
///
/// # Safety
///
/// `raw` must be a valid `struct pci_dev` bound to this driver.
pub(crate) unsafe fn take_drvdata(raw: *mut PciDevRaw) -> *mut c_void {
    // SAFETY: by the function's safety requirements.
    let data = unsafe { shim::warpq_pci_get_drvdata(raw) };
    // SAFETY: as above; clearing it makes a second take return null.
    unsafe { shim::warpq_pci_set_drvdata(raw, core::ptr::null_mut()) };
    data
}
