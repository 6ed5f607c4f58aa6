// SPDX-License-Identifier: GPL-2.0

//! Declarations of the C shim (`warpq_shim.c`), mirrored by hand: bindgen
//! does not run on out-of-tree modules. Keep in step with the C file.
//!
//! Nothing outside the safe wrappers in `glue/` calls these directly.

use kernel::ffi::{c_char, c_int, c_uint, c_ulong, c_void};

/// Declares zero-sized stand-ins for C structures that Rust only passes by
/// pointer and never looks inside.
macro_rules! opaque_c_types {
    ($($(#[$doc:meta])* $name:ident;)*) => {
        $(
            $(#[$doc])*
            #[repr(C)]
            pub(crate) struct $name {
                _opaque: [u8; 0],
            }
        )*
    };
}

opaque_c_types! {
    /// Opaque `struct pci_dev`.
    PciDevRaw;
    /// Opaque `struct device`.
    DeviceRaw;
    /// Opaque `struct page`.
    PageRaw;
    /// Opaque `struct mm_struct`.
    MmRaw;
    /// Opaque `struct file`.
    FileRaw;
    /// Opaque `struct vm_area_struct`.
    VmaRaw;
}

/// `enum warpq_dma_kind` values returned by [`warpq_iommu_describe`].
pub(crate) mod dma_kind {
    pub(crate) const DIRECT: i32 = 0;
    pub(crate) const IOMMU_STRICT: i32 = 1;
    pub(crate) const IOMMU_LAZY: i32 = 2;
    pub(crate) const IOMMU_IDENTITY: i32 = 3;
}

extern "C" {
    // PCI.
    pub(crate) fn warpq_pci_register_driver() -> c_int;
    pub(crate) fn warpq_pci_unregister_driver();
    pub(crate) fn warpq_pci_dev_get(pdev: *mut PciDevRaw) -> *mut PciDevRaw;
    pub(crate) fn warpq_pci_dev_put(pdev: *mut PciDevRaw);
    pub(crate) fn warpq_pci_to_dev(pdev: *mut PciDevRaw) -> *mut DeviceRaw;
    pub(crate) fn warpq_pci_name(pdev: *mut PciDevRaw) -> *const c_char;
    pub(crate) fn warpq_pci_ids_of(pdev: *mut PciDevRaw, vendor: *mut u16, device: *mut u16, revision: *mut u8);
    pub(crate) fn warpq_pci_enable(pdev: *mut PciDevRaw) -> c_int;
    pub(crate) fn warpq_pci_disable(pdev: *mut PciDevRaw);
    pub(crate) fn warpq_pci_set_drvdata(pdev: *mut PciDevRaw, data: *mut c_void);
    pub(crate) fn warpq_pci_get_drvdata(pdev: *mut PciDevRaw) -> *mut c_void;
    pub(crate) fn warpq_dma_set_mask(dev: *mut DeviceRaw, bits: c_uint) -> c_int;
    pub(crate) fn warpq_iommu_describe(dev: *mut DeviceRaw, group_id: *mut c_int) -> c_int;

    // Character device and file.
    pub(crate) fn warpq_misc_register(index: c_uint, parent: *mut DeviceRaw, owner: *mut c_void, err: *mut c_int) -> *mut c_void;
    pub(crate) fn warpq_misc_deregister(handle: *mut c_void);
    pub(crate) fn warpq_file_set_private(file: *mut FileRaw, data: *mut c_void);

    // The queue's vma (more to come: the zap worker).
    pub(crate) fn warpq_vma_setup(vma: *mut VmaRaw, size: c_ulong, private: *mut c_void) -> c_int;

    // mm references.
    pub(crate) fn warpq_mmgrab(mm: *mut MmRaw);
    pub(crate) fn warpq_mmdrop(mm: *mut MmRaw);

    // Ring memory.
    pub(crate) fn warpq_ring_alloc(size: usize) -> *mut u8;
    pub(crate) fn warpq_ring_free(ring: *mut u8);
}
