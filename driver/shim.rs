// SPDX-License-Identifier: GPL-2.0

//! Declarations of the C shim (`warpq_shim.c`), mirrored by hand from
//! `warpq_shim.h`: bindgen does not run on out-of-tree modules.
//!
//! Nothing outside the safe wrappers (`pci.rs`, ...) calls these directly.

use kernel::ffi::{c_char, c_int, c_uint, c_void};

/// Opaque `struct pci_dev`.
#[repr(C)]
pub(crate) struct PciDevRaw {
    _opaque: [u8; 0],
}

/// Opaque `struct device`.
#[repr(C)]
pub(crate) struct DeviceRaw {
    _opaque: [u8; 0],
}

/// `enum warpq_dma_kind` values returned by [`warpq_iommu_describe`].
pub(crate) mod dma_kind {
    pub(crate) const DIRECT: i32 = 0;
    pub(crate) const IOMMU_STRICT: i32 = 1;
    pub(crate) const IOMMU_LAZY: i32 = 2;
    pub(crate) const IOMMU_IDENTITY: i32 = 3;
}

extern "C" {
    pub(crate) fn warpq_pci_register_driver() -> c_int;
    pub(crate) fn warpq_pci_unregister_driver();
    pub(crate) fn warpq_pci_to_dev(pdev: *mut PciDevRaw) -> *mut DeviceRaw;
    pub(crate) fn warpq_pci_name(pdev: *mut PciDevRaw) -> *const c_char;
    pub(crate) fn warpq_pci_ids_of(pdev: *mut PciDevRaw, vendor: *mut u16, device: *mut u16, revision: *mut u8);
    pub(crate) fn warpq_pci_enable(pdev: *mut PciDevRaw) -> c_int;
    pub(crate) fn warpq_pci_disable(pdev: *mut PciDevRaw);
    pub(crate) fn warpq_pci_set_drvdata(pdev: *mut PciDevRaw, data: *mut c_void);
    pub(crate) fn warpq_pci_get_drvdata(pdev: *mut PciDevRaw) -> *mut c_void;
    pub(crate) fn warpq_dma_set_mask(dev: *mut DeviceRaw, bits: c_uint) -> c_int;
    pub(crate) fn warpq_iommu_describe(dev: *mut DeviceRaw, group_id: *mut c_int) -> c_int;
}
