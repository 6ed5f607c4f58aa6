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
    pub(crate) const SQ_HEAD: usize = 64;
    pub(crate) const SQ_TAIL: usize = 128;
    pub(crate) const CQ_HEAD: usize = 192;
    pub(crate) const CQ_TAIL: usize = 256;
    pub(crate) const FLAGS: usize = 320;
    pub(crate) const SQ_INVALID: usize = 328;
}

/// `WARPQ_RING_*` flags.
pub(crate) const RING_NEED_WAKEUP: u32 = 1 << 0;
pub(crate) const RING_STALE: u32 = 1 << 2;
pub(crate) const RING_DEAD: u32 = 1 << 3;

/// `WARPQ_OP_*`.
pub(crate) const OP_NOP: u8 = 0;
pub(crate) const OP_COPY: u8 = 1;
pub(crate) const OP_FILL: u8 = 2;
pub(crate) const OP_CRC32C: u8 = 3;

/// `WARPQ_SQE_EDU_DMA`.
pub(crate) const SQE_EDU_DMA: u8 = 1 << 0;

/// `WARPQ_STATUS_*`.
pub(crate) const STATUS_OK: u32 = 0;
pub(crate) const STATUS_INVALID: u32 = 1;
pub(crate) const STATUS_FAULT_UNREGISTERED: u32 = 2;
pub(crate) const STATUS_FAULT_BOUNDS: u32 = 3;
pub(crate) const STATUS_FAULT_ACCESS: u32 = 4;
pub(crate) const STATUS_FAULT_UNMAPPED: u32 = 5;
pub(crate) const STATUS_FAULT_IOMMU: u32 = 6;
pub(crate) const STATUS_ABORTED: u32 = 7;
pub(crate) const STATUS_DEVICE_ERROR: u32 = 8;

/// `WARPQ_ACCESS_*`.
pub(crate) const ACCESS_READ: u32 = 1 << 0;
pub(crate) const ACCESS_WRITE: u32 = 1 << 1;

/// `WARPQ_CAP_*`.
pub(crate) const CAP_RING: u64 = 1 << 0;
pub(crate) const CAP_SUBMIT_IOCTL: u64 = 1 << 1;
pub(crate) const CAP_EDU_DMA: u64 = 1 << 2;
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

/// The size bits of an ioctl number (`_IOC_SIZEMASK << _IOC_SIZESHIFT`):
/// dispatch ignores them, the structure's own size field says how large it is.
pub(crate) const IOC_SIZE_BITS: u32 = 0x3fff << 16;

const fn iowr(nr: u32, size: usize) -> u32 {
    // _IOC(_IOC_READ|_IOC_WRITE, type, nr, size) on x86.
    (3 << 30) | ((size as u32) << 16) | (IOC_MAGIC << 8) | nr
}

/// `struct warpq_register`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Register {
    pub(crate) size: u32,
    pub(crate) access: u32,
    pub(crate) addr: u64,
    pub(crate) len: u64,
    pub(crate) handle: u64,
}

/// `struct warpq_unregister`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Unregister {
    pub(crate) size: u32,
    pub(crate) rsvd: u32,
    pub(crate) handle: u64,
}

/// `struct warpq_submit`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Submit {
    pub(crate) size: u32,
    pub(crate) count: u32,
    pub(crate) sqes: u64,
    pub(crate) submitted: u32,
    pub(crate) rsvd: u32,
}

// SAFETY: integers only, no padding (checked below).
unsafe impl kernel::types::AsBytes for Submit {}
// SAFETY: as above.
unsafe impl kernel::types::FromBytes for Submit {}
const _: () = assert!(core::mem::size_of::<Submit>() == 24);

/// `struct warpq_wait`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Wait {
    pub(crate) size: u32,
    pub(crate) rsvd: u32,
    pub(crate) min_ready: u32,
    pub(crate) ready: u32,
    pub(crate) timeout_ns: i64,
}

/// `struct warpq_wake`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Wake {
    pub(crate) size: u32,
    pub(crate) rsvd: u32,
}

// SAFETY (all four): `repr(C)`, only integer fields, no padding (sizes
// checked below), so every byte pattern is valid and every byte initialised.
unsafe impl kernel::types::AsBytes for Register {}
// SAFETY: see above.
unsafe impl kernel::types::FromBytes for Register {}
// SAFETY: see above.
unsafe impl kernel::types::FromBytes for Unregister {}
// SAFETY: see above.
unsafe impl kernel::types::AsBytes for Wait {}
// SAFETY: see above.
unsafe impl kernel::types::FromBytes for Wait {}
// SAFETY: see above.
unsafe impl kernel::types::FromBytes for Wake {}
const _: () = assert!(core::mem::size_of::<Register>() == 32);
const _: () = assert!(core::mem::size_of::<Unregister>() == 16);
const _: () = assert!(core::mem::size_of::<Wait>() == 24);
const _: () = assert!(core::mem::size_of::<Wake>() == 8);

/// `struct warpq_stats`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Stats {
    pub(crate) size: u32,
    pub(crate) rsvd: u32,
    pub(crate) commands_ok: u64,
    pub(crate) commands_failed: u64,
    pub(crate) invalidations: u64,
    pub(crate) ignored_by_policy: u64,
    pub(crate) teardowns: u64,
    pub(crate) drains: u64,
    pub(crate) drain_timeouts: u64,
    pub(crate) rebuilds: u64,
    pub(crate) rebuild_retries: u64,
    pub(crate) pages_pinned: u64,
    pub(crate) pages_pinned_peak: u64,
    pub(crate) faults: u64,
    pub(crate) zaps: u64,
    pub(crate) invalidations_by_event: [u64; 8],
    pub(crate) commands_by_status: [u64; 9],
}

// SAFETY: see above (integers only, no padding).
unsafe impl kernel::types::AsBytes for Stats {}
// SAFETY: see above.
unsafe impl kernel::types::FromBytes for Stats {}
const _: () = assert!(core::mem::size_of::<Stats>() == 112 + 17 * 8);

/// `warpq_stats.hist`: per-queue latency histograms after the counters
/// above (a caller whose `size` covers them gets them): `HIST_KINDS` rows
/// of `HIST_BUCKETS` log2-nanosecond buckets, in `hist::Kind` order.
pub(crate) const HIST_KINDS: usize = crate::hist::KINDS;
pub(crate) const HIST_BUCKETS: usize = crate::hist::BUCKETS;
/// The size of `struct warpq_stats` with the histograms.
pub(crate) const STATS_WITH_HIST_SIZE: usize = core::mem::size_of::<Stats>() + HIST_KINDS * HIST_BUCKETS * 8;
// sizeof(struct warpq_stats) in the header (user/tests/uapi_layout.rs checks
// the user crate's copy against the C compiler).
const _: () = assert!(STATS_WITH_HIST_SIZE == 2872);

/// `WARPQ_IOC_INFO`.
pub(crate) const IOC_INFO: u32 = iowr(0x00, core::mem::size_of::<Info>());
/// `WARPQ_IOC_REGISTER`.
pub(crate) const IOC_REGISTER: u32 = iowr(0x01, core::mem::size_of::<Register>());
/// `WARPQ_IOC_UNREGISTER`.
pub(crate) const IOC_UNREGISTER: u32 = iowr(0x02, core::mem::size_of::<Unregister>());
/// `WARPQ_IOC_SUBMIT`.
pub(crate) const IOC_SUBMIT: u32 = iowr(0x03, core::mem::size_of::<Submit>());
/// `WARPQ_IOC_WAIT`.
pub(crate) const IOC_WAIT: u32 = iowr(0x04, core::mem::size_of::<Wait>());
/// `WARPQ_IOC_STATS`.
pub(crate) const IOC_STATS: u32 = iowr(0x06, core::mem::size_of::<Stats>());
/// `WARPQ_IOC_WAKE`.
pub(crate) const IOC_WAKE: u32 = iowr(0x05, core::mem::size_of::<Wake>());
