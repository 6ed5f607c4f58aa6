// SPDX-License-Identifier: GPL-2.0

//! The user API of `uapi/warpq.h`, mirrored for the driver. The header is
//! the contract; `user/` mirrors it too and a test checks the two agree.

/// `WARPQ_UAPI_VERSION`.
pub(crate) const VERSION: u32 = 1;
const IOC_MAGIC: u32 = 0xb7;

/// `WARPQ_RING_MAGIC`.
pub(crate) const RING_MAGIC: u32 = 0x5150_5257;
/// `WARPQ_SQ_ENTRIES`.
pub(crate) const SQ_ENTRIES: u32 = 256;
/// `WARPQ_CQ_ENTRIES`.
pub(crate) const CQ_ENTRIES: u32 = 512;
/// `WARPQ_RING_SQ_OFFSET`.
pub(crate) const RING_SQ_OFFSET: usize = 4096;
/// `WARPQ_RING_CQ_OFFSET`.
pub(crate) const RING_CQ_OFFSET: usize = RING_SQ_OFFSET + SQ_ENTRIES as usize * 64;
/// `WARPQ_RING_SIZE`.
pub(crate) const RING_SIZE: usize = RING_CQ_OFFSET + CQ_ENTRIES as usize * 32;

/// Byte offsets of the header fields (`struct warpq_ring_header`).
pub(crate) mod hdr {
    pub(crate) const MAGIC: usize = 0;
    pub(crate) const VERSION: usize = 4;
    pub(crate) const SQ_ENTRIES: usize = 8;
    pub(crate) const CQ_ENTRIES: usize = 12;
    pub(crate) const SQ_OFFSET: usize = 16;
    pub(crate) const CQ_OFFSET: usize = 20;
    pub(crate) const OWNER_ID: usize = 24;
}

/// `WARPQ_CAP_*`.
pub(crate) const CAP_RING: u64 = 1 << 0;
pub(crate) const CAP_FORK_QUEUE: u64 = 1 << 3;

/// `struct warpq_info`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Info {
    pub(crate) size: u32,
    pub(crate) version: u32,
    pub(crate) capabilities: u64,
    pub(crate) sq_entries: u32,
    pub(crate) cq_entries: u32,
    pub(crate) ring_size: u32,
    pub(crate) max_regions: u32,
    pub(crate) max_region_bytes: u64,
    pub(crate) policy: u32,
    pub(crate) dma_translation: u32,
}

// SAFETY: `repr(C)`, only integer fields, laid out without padding (48 bytes,
// checked below), so every byte is initialised.
unsafe impl kernel::types::AsBytes for Info {}
const _: () = assert!(core::mem::size_of::<Info>() == 48);

const fn iowr(nr: u32, size: usize) -> u32 {
    // _IOC(_IOC_READ|_IOC_WRITE, type, nr, size) on x86.
    (3 << 30) | ((size as u32) << 16) | (IOC_MAGIC << 8) | nr
}

/// `WARPQ_IOC_INFO`.
pub(crate) const IOC_INFO: u32 = iowr(0x00, core::mem::size_of::<Info>());
