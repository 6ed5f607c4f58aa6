//! The kernel ABI of `driver/uapi/warpq.h`, mirrored by hand. A test in
//! `tests/uapi_layout.rs` compiles the C header and checks that the two agree.

#![allow(non_camel_case_types)]

/// The ABI version this mirror describes (`WARPQ_IOC_INFO` reports the driver's).
pub const WARPQ_UAPI_VERSION: u32 = 1;
/// The ioctl type byte of every warpq ioctl.
pub const WARPQ_IOC_MAGIC: u32 = 0xb7;

/// `warpq_ring_header.magic`: "WRPQ".
pub const WARPQ_RING_MAGIC: u32 = 0x5150_5257;
/// Submission ring entries (a power of two).
pub const WARPQ_SQ_ENTRIES: u32 = 256;
/// Completion ring entries (a power of two).
pub const WARPQ_CQ_ENTRIES: u32 = 512;
/// Bytes of the header page at the start of the ring.
pub const WARPQ_RING_HEADER_SIZE: usize = 4096;
/// Offset of the submission entries in the ring (64 bytes each).
pub const WARPQ_RING_SQ_OFFSET: usize = WARPQ_RING_HEADER_SIZE;
/// Offset of the completion entries in the ring (32 bytes each).
pub const WARPQ_RING_CQ_OFFSET: usize = WARPQ_RING_SQ_OFFSET + WARPQ_SQ_ENTRIES as usize * 64;
/// Bytes to map: header, submission and completion rings.
pub const WARPQ_RING_SIZE: usize = WARPQ_RING_CQ_OFFSET + WARPQ_CQ_ENTRIES as usize * 32;

/// Ring flag: the engine sleeps; `WARPQ_IOC_WAKE` wakes it.
pub const WARPQ_RING_NEED_WAKEUP: u32 = 1 << 0;
/// Ring flag: waiting for a rebuild (touch the ring or make an ioctl).
pub const WARPQ_RING_STALE: u32 = 1 << 2;
/// Ring flag: the queue's mm or device is gone.
pub const WARPQ_RING_DEAD: u32 = 1 << 3;

/// Opcode: no memory access.
pub const WARPQ_OP_NOP: u8 = 0;
/// Opcode: `len` bytes from `src` to `dst`.
pub const WARPQ_OP_COPY: u8 = 1;
/// Opcode: `len` bytes at `dst` set to the low byte of `value`.
pub const WARPQ_OP_FILL: u8 = 2;
/// Opcode: CRC32C of `len` bytes at `src`, seeded with `value`, in `result`.
pub const WARPQ_OP_CRC32C: u8 = 3;
/// `warpq_sqe.flags`: COPY through the edu device's DMA engine.
pub const WARPQ_SQE_EDU_DMA: u8 = 1 << 0;

/// Completion status: success.
pub const WARPQ_STATUS_OK: u32 = 0;
/// Completion status: unknown opcode, bad flags, zero or huge length.
pub const WARPQ_STATUS_INVALID: u32 = 1;
/// Completion status: address not in a registered buffer.
pub const WARPQ_STATUS_FAULT_UNREGISTERED: u32 = 2;
/// Completion status: range crosses the end of its buffer.
pub const WARPQ_STATUS_FAULT_BOUNDS: u32 = 3;
/// Completion status: buffer not registered for this access.
pub const WARPQ_STATUS_FAULT_ACCESS: u32 = 4;
/// Completion status: buffer gone (munmap, ...).
pub const WARPQ_STATUS_FAULT_UNMAPPED: u32 = 5;
/// Completion status: the DMA address did not translate.
pub const WARPQ_STATUS_FAULT_IOMMU: u32 = 6;
/// Completion status: queue reset (drain timeout, close, exit).
pub const WARPQ_STATUS_ABORTED: u32 = 7;
/// Completion status: the edu DMA engine failed.
pub const WARPQ_STATUS_DEVICE_ERROR: u32 = 8;

/// Registration access: the device may read the buffer.
pub const WARPQ_ACCESS_READ: u32 = 1 << 0;
/// Registration access: the device may write the buffer.
pub const WARPQ_ACCESS_WRITE: u32 = 1 << 1;

/// A submission entry (64 bytes). Addresses are the submitter's user virtual addresses inside registered buffers.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_sqe {
    /// `WARPQ_OP_*`.
    pub opcode: u8,
    /// `WARPQ_SQE_*`.
    pub flags: u8,
    /// Reserved, zero.
    pub rsvd0: u16,
    /// Reserved, zero.
    pub rsvd1: u32,
    /// Echoed in the completion.
    pub user_data: u64,
    /// Source address.
    pub src: u64,
    /// Destination address.
    pub dst: u64,
    /// Bytes.
    pub len: u64,
    /// FILL byte or CRC32C seed.
    pub value: u64,
    /// Reserved, zero.
    pub rsvd2: [u64; 2],
}

/// A completion entry (32 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_cqe {
    /// The `user_data` of the submission this completes.
    pub user_data: u64,
    /// `WARPQ_STATUS_*`.
    pub status: u32,
    /// Reserved, zero.
    pub rsvd: u32,
    /// CRC32C value; bytes done for COPY/FILL.
    pub result: u64,
    /// Reserved, zero.
    pub rsvd2: u64,
}

/// `WARPQ_IOC_REGISTER` argument.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_register {
    /// Size of this structure in bytes (the kernel accepts larger, newer ones).
    pub size: u32,
    /// `WARPQ_ACCESS_*`.
    pub access: u32,
    /// Page-aligned start.
    pub addr: u64,
    /// Page-aligned length, > 0.
    pub len: u64,
    /// Out: the registration's handle.
    pub handle: u64,
}

/// `WARPQ_IOC_UNREGISTER` argument.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_unregister {
    /// Size of this structure in bytes (the kernel accepts larger, newer ones).
    pub size: u32,
    /// Reserved, zero.
    pub rsvd: u32,
    /// From `WARPQ_IOC_REGISTER`.
    pub handle: u64,
}

/// `WARPQ_IOC_SUBMIT` argument.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_submit {
    /// Size of this structure in bytes (the kernel accepts larger, newer ones).
    pub size: u32,
    /// Entries at `sqes`.
    pub count: u32,
    /// User pointer to `count` entries.
    pub sqes: u64,
    /// Out: entries queued.
    pub submitted: u32,
    /// Reserved, zero.
    pub rsvd: u32,
}

/// `WARPQ_IOC_WAIT` argument.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_wait {
    /// Size of this structure in bytes (the kernel accepts larger, newer ones).
    pub size: u32,
    /// Reserved, zero.
    pub rsvd: u32,
    /// Wait until this many completions are ready.
    pub min_ready: u32,
    /// Out: completions ready.
    pub ready: u32,
    /// Timeout in nanoseconds; negative: none.
    pub timeout_ns: i64,
}

/// `WARPQ_IOC_WAKE` argument.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_wake {
    /// Size of this structure in bytes (the kernel accepts larger, newer ones).
    pub size: u32,
    /// Reserved, zero.
    pub rsvd: u32,
}

/// `warpq_stats.hist` rows (`WARPQ_HIST_*`): an invalidation that took the
/// queue lock, start to end.
pub const WARPQ_HIST_INVALIDATE: usize = 0;
/// Its pause and drain of the engine.
pub const WARPQ_HIST_DRAIN: usize = 1;
/// Its DMA unmapping of one region.
pub const WARPQ_HIST_UNMAP: usize = 2;
/// Its dirtying and unpinning of one region.
pub const WARPQ_HIST_UNPIN: usize = 3;
/// A rebuild that pinned something, start to end.
pub const WARPQ_HIST_REBUILD: usize = 4;
/// GUP of one region in a rebuild.
pub const WARPQ_HIST_PIN: usize = 5;
/// DMA mapping of one region in a rebuild.
pub const WARPQ_HIST_MAP: usize = 6;
/// How long the queue stayed stale after a teardown.
pub const WARPQ_HIST_PAUSED: usize = 7;
/// Number of histograms.
pub const WARPQ_HIST_KINDS: usize = 8;
/// Buckets per histogram (log2 nanoseconds).
pub const WARPQ_HIST_BUCKETS: usize = 41;

/// `WARPQ_IOC_STATS` argument: the calling process's queue counters.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct warpq_stats {
    /// Size of this structure in bytes (the kernel accepts larger, newer ones).
    pub size: u32,
    /// Reserved, zero.
    pub rsvd: u32,
    /// Commands completed with success.
    pub commands_ok: u64,
    /// Commands completed with an error status.
    pub commands_failed: u64,
    /// mmu-notifier invalidations of registered ranges.
    pub invalidations: u64,
    /// Invalidations the policy skipped.
    pub ignored_by_policy: u64,
    /// Invalidations that tore mappings down.
    pub teardowns: u64,
    /// Engine drains.
    pub drains: u64,
    /// Drains that timed out (queue reset).
    pub drain_timeouts: u64,
    /// Regions pinned and mapped again after a teardown.
    pub rebuilds: u64,
    /// Rebuilds retried after a collision.
    pub rebuild_retries: u64,
    /// Pages pinned now.
    pub pages_pinned: u64,
    /// Most pages pinned at once.
    pub pages_pinned_peak: u64,
    /// Faults on the ring mapping.
    pub faults: u64,
    /// Zaps of the ring mapping.
    pub zaps: u64,
    /// Invalidations by `enum mmu_notifier_event` (UNMAP, CLEAR,
    /// PROTECTION_VMA, PROTECTION_PAGE, SOFT_DIRTY, RELEASE, MIGRATE, EXCLUSIVE).
    pub invalidations_by_event: [u64; 8],
    /// Completions by `WARPQ_STATUS_*`.
    pub commands_by_status: [u64; 9],
    /// This queue's latency histograms, `hist[WARPQ_HIST_*][b]`: samples of
    /// `2^b..2^(b+1)` ns (bucket 0 also counts 0). Written when `size`
    /// covers them (the size the kernel writes back says so).
    pub hist: [[u64; WARPQ_HIST_BUCKETS]; WARPQ_HIST_KINDS],
}

impl Default for warpq_stats {
    fn default() -> Self {
        // SAFETY: integers only: all zeroes is a valid value.
        unsafe { std::mem::zeroed() }
    }
}

/// Capability: the mapped ring.
pub const WARPQ_CAP_RING: u64 = 1 << 0;
/// Capability: `WARPQ_IOC_SUBMIT`.
pub const WARPQ_CAP_SUBMIT_IOCTL: u64 = 1 << 1;
/// Capability: `WARPQ_SQE_EDU_DMA` available.
pub const WARPQ_CAP_EDU_DMA: u64 = 1 << 2;
/// Capability: a forked child gets its own queue at fault time.
pub const WARPQ_CAP_FORK_QUEUE: u64 = 1 << 3;

/// The first page of the ring. Indices are free-running `u32` counters (slot = index & (entries - 1)); `sq_tail` and `cq_head` are written by user space, `sq_head`, `cq_tail` and `flags` by the kernel.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct warpq_ring_header {
    /// `WARPQ_RING_MAGIC`.
    pub magic: u32,
    /// `WARPQ_UAPI_VERSION`.
    pub version: u32,
    /// `WARPQ_SQ_ENTRIES`.
    pub sq_entries: u32,
    /// `WARPQ_CQ_ENTRIES`.
    pub cq_entries: u32,
    /// `WARPQ_RING_SQ_OFFSET`.
    pub sq_offset: u32,
    /// `WARPQ_RING_CQ_OFFSET`.
    pub cq_offset: u32,
    /// The queue's identity: differs between the queues of parent and child.
    pub owner_id: u64,
    /// Padding.
    pub pad0: [u8; 32],
    /// Kernel: next entry the engine takes.
    pub sq_head: u32,
    /// Padding.
    pub pad1: [u8; 60],
    /// User: one past the last published entry.
    pub sq_tail: u32,
    /// Padding.
    pub pad2: [u8; 60],
    /// User: next completion to consume.
    pub cq_head: u32,
    /// Padding.
    pub pad3: [u8; 60],
    /// Kernel: one past the last posted completion.
    pub cq_tail: u32,
    /// Padding.
    pub pad4: [u8; 60],
    /// `WARPQ_RING_*` (kernel-written).
    pub flags: u32,
    /// Padding.
    pub pad5: u32,
    /// Entries completed with `WARPQ_STATUS_INVALID`.
    pub sq_invalid: u64,
}

/// `warpq_info.policy`: every overlapping invalidation tears down.
pub const WARPQ_POLICY_STRICT: u32 = 0;
/// `warpq_info.policy`: only events that can change the pages or rights tear down.
pub const WARPQ_POLICY_FILTERED: u32 = 1;

/// `WARPQ_IOC_INFO` argument: what the device and driver offer.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_info {
    /// Size of this structure in bytes (the kernel accepts larger, newer ones).
    pub size: u32,
    /// Out: `WARPQ_UAPI_VERSION`.
    pub version: u32,
    /// `WARPQ_CAP_*`.
    pub capabilities: u64,
    /// Out: `WARPQ_SQ_ENTRIES`.
    pub sq_entries: u32,
    /// Out: `WARPQ_CQ_ENTRIES`.
    pub cq_entries: u32,
    /// Bytes to map.
    pub ring_size: u32,
    /// Registered buffers per queue.
    pub max_regions: u32,
    /// Largest registered buffer.
    pub max_region_bytes: u64,
    /// `WARPQ_POLICY_*`.
    pub policy: u32,
    /// 0 dma-direct, 1 IOMMU strict, 2 IOMMU lazy.
    pub dma_translation: u32,
}

const fn iowr(nr: u32, size: usize) -> libc::c_ulong {
    ((3u32 << 30) | ((size as u32) << 16) | (WARPQ_IOC_MAGIC << 8) | nr) as libc::c_ulong
}

/// ioctl: what the device and driver offer.
pub const WARPQ_IOC_INFO: libc::c_ulong = iowr(0x00, std::mem::size_of::<warpq_info>());
/// ioctl: register a buffer for device access.
pub const WARPQ_IOC_REGISTER: libc::c_ulong = iowr(0x01, std::mem::size_of::<warpq_register>());
/// ioctl: unregister a buffer (returns once the device no longer touches it).
pub const WARPQ_IOC_UNREGISTER: libc::c_ulong = iowr(0x02, std::mem::size_of::<warpq_unregister>());
/// ioctl: queue submissions by system call.
pub const WARPQ_IOC_SUBMIT: libc::c_ulong = iowr(0x03, std::mem::size_of::<warpq_submit>());
/// ioctl: wait for completions.
pub const WARPQ_IOC_WAIT: libc::c_ulong = iowr(0x04, std::mem::size_of::<warpq_wait>());
/// ioctl: the calling process's queue counters.
pub const WARPQ_IOC_STATS: libc::c_ulong = iowr(0x06, std::mem::size_of::<warpq_stats>());
/// ioctl: wake the engine.
pub const WARPQ_IOC_WAKE: libc::c_ulong = iowr(0x05, std::mem::size_of::<warpq_wake>());
