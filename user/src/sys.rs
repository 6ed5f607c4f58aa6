//! The kernel ABI of `driver/uapi/warpq.h`, mirrored by hand. A test in
//! `tests/uapi_layout.rs` compiles the C header and checks that the two agree.

#![allow(missing_docs)]

pub const WARPQ_UAPI_VERSION: u32 = 1;
pub const WARPQ_IOC_MAGIC: u32 = 0xb7;

pub const WARPQ_RING_MAGIC: u32 = 0x5150_5257;
pub const WARPQ_SQ_ENTRIES: u32 = 256;
pub const WARPQ_CQ_ENTRIES: u32 = 512;
pub const WARPQ_RING_HEADER_SIZE: usize = 4096;
pub const WARPQ_RING_SQ_OFFSET: usize = WARPQ_RING_HEADER_SIZE;
pub const WARPQ_RING_CQ_OFFSET: usize = WARPQ_RING_SQ_OFFSET + WARPQ_SQ_ENTRIES as usize * 64;
pub const WARPQ_RING_SIZE: usize = WARPQ_RING_CQ_OFFSET + WARPQ_CQ_ENTRIES as usize * 32;

pub const WARPQ_RING_NEED_WAKEUP: u32 = 1 << 0;
pub const WARPQ_RING_PAUSED: u32 = 1 << 1;
pub const WARPQ_RING_STALE: u32 = 1 << 2;
pub const WARPQ_RING_DEAD: u32 = 1 << 3;

pub const WARPQ_OP_NOP: u8 = 0;
pub const WARPQ_OP_COPY: u8 = 1;
pub const WARPQ_OP_FILL: u8 = 2;
pub const WARPQ_OP_CRC32C: u8 = 3;
pub const WARPQ_SQE_EDU_DMA: u8 = 1 << 0;

pub const WARPQ_STATUS_OK: u32 = 0;
pub const WARPQ_STATUS_INVALID: u32 = 1;
pub const WARPQ_STATUS_FAULT_UNREGISTERED: u32 = 2;
pub const WARPQ_STATUS_FAULT_BOUNDS: u32 = 3;
pub const WARPQ_STATUS_FAULT_ACCESS: u32 = 4;
pub const WARPQ_STATUS_FAULT_UNMAPPED: u32 = 5;
pub const WARPQ_STATUS_FAULT_IOMMU: u32 = 6;
pub const WARPQ_STATUS_ABORTED: u32 = 7;
pub const WARPQ_STATUS_DEVICE_ERROR: u32 = 8;

pub const WARPQ_ACCESS_READ: u32 = 1 << 0;
pub const WARPQ_ACCESS_WRITE: u32 = 1 << 1;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_sqe {
    pub opcode: u8,
    pub flags: u8,
    pub rsvd0: u16,
    pub rsvd1: u32,
    pub user_data: u64,
    pub src: u64,
    pub dst: u64,
    pub len: u64,
    pub value: u64,
    pub rsvd2: [u64; 2],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_cqe {
    pub user_data: u64,
    pub status: u32,
    pub rsvd: u32,
    pub result: u64,
    pub rsvd2: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_register {
    pub size: u32,
    pub access: u32,
    pub addr: u64,
    pub len: u64,
    pub handle: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_unregister {
    pub size: u32,
    pub rsvd: u32,
    pub handle: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_submit {
    pub size: u32,
    pub count: u32,
    pub sqes: u64,
    pub submitted: u32,
    pub rsvd: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_wait {
    pub size: u32,
    pub rsvd: u32,
    pub min_ready: u32,
    pub ready: u32,
    pub timeout_ns: i64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_wake {
    pub size: u32,
    pub rsvd: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_stats {
    pub size: u32,
    pub rsvd: u32,
    pub commands_ok: u64,
    pub commands_failed: u64,
    pub invalidations: u64,
    pub ignored_by_policy: u64,
    pub teardowns: u64,
    pub drains: u64,
    pub drain_timeouts: u64,
    pub rebuilds: u64,
    pub rebuild_retries: u64,
    pub pages_pinned: u64,
    pub pages_pinned_peak: u64,
    pub faults: u64,
    pub zaps: u64,
}

pub const WARPQ_CAP_RING: u64 = 1 << 0;
pub const WARPQ_CAP_SUBMIT_IOCTL: u64 = 1 << 1;
pub const WARPQ_CAP_EDU_DMA: u64 = 1 << 2;
pub const WARPQ_CAP_FORK_QUEUE: u64 = 1 << 3;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct warpq_ring_header {
    pub magic: u32,
    pub version: u32,
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub sq_offset: u32,
    pub cq_offset: u32,
    pub owner_id: u64,
    pub pad0: [u8; 32],
    pub sq_head: u32,
    pub pad1: [u8; 60],
    pub sq_tail: u32,
    pub pad2: [u8; 60],
    pub cq_head: u32,
    pub pad3: [u8; 60],
    pub cq_tail: u32,
    pub pad4: [u8; 60],
    pub flags: u32,
    pub pad5: u32,
    pub sq_invalid: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct warpq_info {
    pub size: u32,
    pub version: u32,
    pub capabilities: u64,
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub ring_size: u32,
    pub max_regions: u32,
    pub max_region_bytes: u64,
    pub policy: u32,
    pub dma_translation: u32,
}

const fn iowr(nr: u32, size: usize) -> libc::c_ulong {
    ((3u32 << 30) | ((size as u32) << 16) | (WARPQ_IOC_MAGIC << 8) | nr) as libc::c_ulong
}

pub const WARPQ_IOC_INFO: libc::c_ulong = iowr(0x00, std::mem::size_of::<warpq_info>());
pub const WARPQ_IOC_REGISTER: libc::c_ulong = iowr(0x01, std::mem::size_of::<warpq_register>());
pub const WARPQ_IOC_UNREGISTER: libc::c_ulong = iowr(0x02, std::mem::size_of::<warpq_unregister>());
pub const WARPQ_IOC_SUBMIT: libc::c_ulong = iowr(0x03, std::mem::size_of::<warpq_submit>());
pub const WARPQ_IOC_WAIT: libc::c_ulong = iowr(0x04, std::mem::size_of::<warpq_wait>());
pub const WARPQ_IOC_STATS: libc::c_ulong = iowr(0x06, std::mem::size_of::<warpq_stats>());
pub const WARPQ_IOC_WAKE: libc::c_ulong = iowr(0x05, std::mem::size_of::<warpq_wake>());
