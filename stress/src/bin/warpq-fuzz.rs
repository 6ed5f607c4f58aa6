//! warpq-fuzz: seeded random sequences of everything a process can do to a
//! warpq queue, with the driver's answers checked after every step.
//!
//! `warpq-fuzz [--seed S] [--runs N] [--steps K] [--seconds T] [--device PATH]`
//! (defaults: a seed from the clock, 20 runs, 300 steps, 100 s in all; each
//! run gets `T / N` seconds and stops taking steps when they are up).
//!
//! # What is fuzzed
//!
//! Run `i` uses seed `S + i` and takes up to `K` steps, each a weighted random
//! pick among:
//!
//! - the ioctls: REGISTER (whole and partial buffers, edge addresses and
//!   lengths: misaligned, zero, overflowing, too large, unmapped, guard
//!   pages, kernel addresses, the ring itself; every access mask), UNREGISTER
//!   (live, stale, the parent's and garbage handles), INFO, STATS, WAIT
//!   (small timeouts), WAKE, SUBMIT (random entries, arrays that run into an
//!   unmapped page), unknown ioctl numbers; each argument with a random
//!   declared size (smaller, equal, larger), random size bits in the ioctl
//!   number, and placed in normal, read-only, straddling or unmapped memory;
//! - memory: `mmap`, `munmap` (whole and partial), `mprotect`, `mremap`
//!   (moved, grown) and `madvise(DONTNEED)` of the buffers it registered,
//!   private and shared, and a fresh buffer mapped over an address range a
//!   stale registration still follows; `mmap` (also the refused kinds),
//!   `munmap`, `mprotect`, `mremap` and `madvise(DONTNEED)` of the ring
//!   mappings (a queue mapping only moves or splits as a whole: the driver
//!   refuses the rest, and the fuzzer checks it does);
//! - the ring: random submission entries (random opcodes, flags, reserved
//!   bits, lengths; addresses inside, outside and straddling registered
//!   buffers) published through the tail; garbage tails and overwritten
//!   header indices, after which the fuzzer parks the tail out of reach and
//!   publishes a lone NOP: once it completes nothing is in flight and the
//!   ring is in a known state again;
//! - processes and files: fork (the child runs a few random steps of its own
//!   on the inherited files and mappings, with its own queues, and sometimes
//!   exits with a ring full of commands in flight; the parent reaps it within
//!   a time bound), dup/close of descriptors, more opens of the device
//!   (read-only too).
//!
//! # What is checked
//!
//! - Every ioctl returns success or an errno from its documented set (the
//!   header and the driver's ioctl paths: `E_*` below); where the outcome is
//!   predictable (declared size, bad or read-only argument, misaligned or
//!   oversized REGISTER, overlap, full table, unpinnable memory, stale
//!   handle, unknown number...) exactly that. The kernel writes nothing
//!   around the structure (canary bytes) nor past the size it reports.
//! - Every completion has a status in 0..=8, zero reserved fields, result 0
//!   unless OK, and a user_data the fuzzer submitted on that queue; while the
//!   ring is sane they come exactly once and in submission order, with the
//!   predicted status (INVALID, FAULT_UNREGISTERED, FAULT_BOUNDS,
//!   FAULT_ACCESS, OK for clean registrations; or ABORTED). Every buffer has
//!   a byte model: COPY/FILL results are applied in completion order,
//!   CRC32C results and the buffers' bytes are compared with it whenever
//!   nothing else can be touching them; failed commands must touch nothing.
//!   Ring indices, SUBMIT's count, WAIT's count and STATS agree with what
//!   was submitted and consumed; a child sees a fresh queue of its own.
//! - Nothing hangs: every wait is bounded, a step that does not return
//!   within the hang limit is reported with the fuzzer's kernel stack, a
//!   child is killed and reported after 30 s, a run over twice its time
//!   budget fails.
//! - At the end of each run, with everything closed: pins balance in
//!   `/proc/vmstat` (waiting up to 10 s), the device's `pages_pinned` is 0
//!   and the kernel log (`/dev/kmsg`) shows no new splat.
//!
//! # Replaying
//!
//! Each run prints `fuzz: seed 0x…` first; a failure names the seed and the
//! step, and prints the last steps the run took.
//! `warpq-fuzz --seed 0x… --runs 1 --steps N` replays the same action
//! sequence (the choices depend only on the seed and on the fuzzer's own
//! bookkeeping; the interleaving with the engine may differ).

use std::collections::{HashSet, VecDeque};
use std::ffi::CString;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use warpq::crc32c;
use warpq::sys::*;
use warpq_stress::{KernelLog, PinCounts, Rng};

const PAGE: usize = 4096;
const PAGE64: u64 = PAGE as u64;
const RING_PAGES: usize = WARPQ_RING_SIZE / PAGE;
const RING64: u64 = WARPQ_RING_SIZE as u64;
/// Slots of the reserved window that holds the ring mappings and the ioctl
/// scratch pages (never device-writable memory).
const WIN_SLOTS: usize = 40;
const SLOT_BYTES: usize = 16 * PAGE;
/// Slot 0: scratch pages; the last slot: always PROT_NONE ("wild" pointers).
const WILD_SLOT: usize = WIN_SLOTS - 1;
const MAX_CMD: u64 = 4 << 20;
const EDU_MAX: u64 = 4096;
const MAX_BUFS: usize = 8;
const MAX_FILES: usize = 3;
const MAX_FDS: usize = 4;
const MAX_RINGS: usize = 5;
const MAX_CHILDREN: usize = 2;
const CHILD_LIMIT: Duration = Duration::from_secs(30);
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
const CANARY: u8 = 0xa5;
/// Version 1 sizes of the structures whose size the kernel writes back: it
/// accepts any size from these up.
const INFO_V1: usize = 48;
const STATS_V1: usize = 248;
const KERNEL_ADDR: u64 = 0xffff_8880_0000_0000;

// Ring header offsets (`struct warpq_ring_header`).
const H_MAGIC: usize = 0;
const H_VERSION: usize = 4;
const H_OWNER: usize = 24;
const H_SQ_HEAD: usize = 64;
const H_SQ_TAIL: usize = 128;
const H_CQ_HEAD: usize = 192;
const H_CQ_TAIL: usize = 256;
const H_FLAGS: usize = 320;
const H_SQ_INVALID: usize = 328;

const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
const RD: i32 = libc::PROT_READ;
const NONE: i32 = libc::PROT_NONE;
/// A page that is not mapped (in `prot` arrays).
const GONE: i32 = -1;

// Documented errnos, per ioctl (the header and the driver's ioctl paths).
// Every ioctl that needs the caller's queue may also fail creating it.
const E_INFO: &[i32] = &[libc::EFAULT, libc::EINVAL];
const E_STATS: &[i32] = &[libc::EFAULT, libc::EINVAL];
const E_REGISTER: &[i32] = &[
    libc::EFAULT,
    libc::EINVAL,
    libc::E2BIG,
    libc::ENOSPC,
    libc::EEXIST,
    libc::EBUSY,
    libc::ENOMEM,
    libc::EAGAIN,
    libc::ESRCH,
    libc::ENODEV,
    libc::EMFILE,
];
const E_UNREGISTER: &[i32] = &[
    libc::EFAULT,
    libc::EINVAL,
    libc::ENOENT,
    libc::EBUSY,
    libc::ESRCH,
    libc::ENODEV,
    libc::ENOMEM,
    libc::EMFILE,
];
const E_SUBMIT: &[i32] = &[
    libc::EFAULT,
    libc::EINVAL,
    libc::ENOMEM,
    libc::ESRCH,
    libc::ENODEV,
    libc::EMFILE,
];
const E_WAIT: &[i32] = &[
    libc::EFAULT,
    libc::EINVAL,
    libc::ENOMEM,
    libc::EINTR,
    libc::ESRCH,
    libc::ENODEV,
    libc::EMFILE,
];
const E_WAKE: &[i32] = &[
    libc::EFAULT,
    libc::EINVAL,
    libc::ENOMEM,
    libc::ESRCH,
    libc::ENODEV,
    libc::EMFILE,
];
const E_UNKNOWN: &[i32] = &[libc::ENOTTY];

type Res<T = ()> = Result<T, String>;

// ---- state shared with the signal handler and the watchdog ---------------

static START: OnceLock<Instant> = OnceLock::new();
static CUR_SEED: AtomicU64 = AtomicU64::new(0);
static CUR_STEP: AtomicU64 = AtomicU64::new(0);
static CUR_ACT: AtomicU32 = AtomicU32::new(0);
/// Milliseconds since START when the current step began (0: between steps).
static STEP_T0: AtomicU64 = AtomicU64::new(0);
static HANG_MS: AtomicU64 = AtomicU64::new(30_000);
static IN_CHILD: AtomicBool = AtomicBool::new(false);

fn now_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The actions, in the order of `NAMES`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Act {
    Setup,
    NewBuf,
    Register,
    Unregister,
    Info,
    Stats,
    Wait,
    Wake,
    SubmitIoctl,
    UnknownIoctl,
    RingSubmit,
    Drain,
    GarbageTail,
    CorruptHeader,
    Resync,
    MapRing,
    UnmapRing,
    MprotectRing,
    MremapRing,
    DontneedRing,
    UnmapBuf,
    MprotectBuf,
    MremapBuf,
    DontneedBuf,
    CpuWrite,
    CpuVerify,
    Fork,
    Dup,
    CloseFd,
    Open,
    ExitNow,
    Cleanup,
}

const NAMES: [&str; 32] = [
    "setup",
    "new-buffer",
    "REGISTER",
    "UNREGISTER",
    "INFO",
    "STATS",
    "WAIT",
    "WAKE",
    "SUBMIT",
    "unknown-ioctl",
    "ring-submit",
    "drain",
    "garbage-tail",
    "corrupt-header",
    "resync",
    "mmap-ring",
    "munmap-ring",
    "mprotect-ring",
    "mremap-ring",
    "dontneed-ring",
    "munmap-buffer",
    "mprotect-buffer",
    "mremap-buffer",
    "dontneed-buffer",
    "cpu-write",
    "cpu-verify",
    "fork",
    "dup",
    "close",
    "open",
    "child-exit",
    "cleanup",
];

impl Act {
    fn name(self) -> &'static str {
        NAMES[self as usize]
    }
}

/// (action, weight in the parent, weight in a child).
const WEIGHTS: &[(Act, u64, u64)] = &[
    (Act::NewBuf, 4, 2),
    (Act::Register, 9, 8),
    (Act::Unregister, 5, 4),
    (Act::Info, 1, 1),
    (Act::Stats, 2, 1),
    (Act::Wait, 3, 2),
    (Act::Wake, 2, 1),
    (Act::SubmitIoctl, 5, 4),
    (Act::UnknownIoctl, 2, 1),
    (Act::RingSubmit, 16, 12),
    (Act::Drain, 3, 2),
    (Act::GarbageTail, 2, 1),
    (Act::CorruptHeader, 1, 1),
    (Act::Resync, 2, 1),
    (Act::MapRing, 3, 2),
    (Act::UnmapRing, 2, 2),
    (Act::MprotectRing, 2, 1),
    (Act::MremapRing, 1, 1),
    (Act::DontneedRing, 2, 1),
    (Act::UnmapBuf, 2, 2),
    (Act::MprotectBuf, 2, 1),
    (Act::MremapBuf, 1, 1),
    (Act::DontneedBuf, 2, 1),
    (Act::CpuWrite, 4, 2),
    (Act::CpuVerify, 2, 2),
    (Act::Fork, 2, 0),
    (Act::Dup, 2, 1),
    (Act::CloseFd, 2, 2),
    (Act::Open, 2, 1),
    (Act::ExitNow, 0, 2),
];

// ---- small helpers ---------------------------------------------------------

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ename(e: i32) -> String {
    warpq::errno_name(e).map_or_else(|| format!("errno {e}"), str::to_string)
}

fn show(r: Result<(), i32>) -> String {
    match r {
        Ok(()) => "success".into(),
        Err(e) => ename(e),
    }
}

fn names(l: &[i32]) -> String {
    l.iter().map(|&e| ename(e)).collect::<Vec<_>>().join("|")
}

/// `[a, a + al)` and `[b, b + bl)` share a byte (saturating at the top).
fn overlaps(a: u64, al: u64, b: u64, bl: u64) -> bool {
    al > 0 && bl > 0 && a < b.saturating_add(bl) && b < a.saturating_add(al)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Bytes of a reproducible pattern.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut s = splitmix(seed) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.extend_from_slice(&s.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// ioctl argument structures: `repr(C)`, integers only, no padding.
///
/// # Safety
///
/// Implementors must have no padding and accept every bit pattern.
unsafe trait Plain: Copy + Default {}
// SAFETY: `repr(C)` structures of integers without padding (`warpq::sys`,
// whose layout a test checks against the C header).
unsafe impl Plain for warpq_info {}
// SAFETY: as above.
unsafe impl Plain for warpq_register {}
// SAFETY: as above.
unsafe impl Plain for warpq_unregister {}
// SAFETY: as above.
unsafe impl Plain for warpq_submit {}
// SAFETY: as above.
unsafe impl Plain for warpq_wait {}
// SAFETY: as above.
unsafe impl Plain for warpq_wake {}
// SAFETY: as above.
unsafe impl Plain for StatsV1 {}
// SAFETY: `repr(C)`, a `Plain` structure followed by `u64`s: no padding.
unsafe impl Plain for InfoBuf {}
// SAFETY: as above.
unsafe impl Plain for StatsBuf {}

/// INFO's argument with room behind it: the kernel's structure may be
/// larger than this crate's mirror (the size it writes back says).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct InfoBuf {
    i: warpq_info,
    pad: [[u64; 32]; 2],
}

/// `struct warpq_stats` as version 1 of the header lays it out (248 bytes):
/// the prefix every later version keeps.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct StatsV1 {
    size: u32,
    rsvd: u32,
    commands_ok: u64,
    commands_failed: u64,
    invalidations: u64,
    ignored_by_policy: u64,
    teardowns: u64,
    drains: u64,
    drain_timeouts: u64,
    rebuilds: u64,
    rebuild_retries: u64,
    pages_pinned: u64,
    pages_pinned_peak: u64,
    faults: u64,
    zaps: u64,
    invalidations_by_event: [u64; 8],
    commands_by_status: [u64; 9],
}

/// STATS's argument with room behind it (the ABI grows at the end; the
/// kernel's size, which it writes back, says how much it uses).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct StatsBuf {
    s: StatsV1,
    pad: [[u64; 32]; 14],
}
// SAFETY: as above.
unsafe impl Plain for warpq_sqe {}

fn as_bytes<T: Plain>(v: &T) -> &[u8] {
    // SAFETY: `T: Plain` has no padding, so all its bytes are initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

fn from_bytes<T: Plain>(b: &[u8]) -> T {
    assert!(b.len() >= std::mem::size_of::<T>());
    let mut v = T::default();
    // SAFETY: `T: Plain` accepts any bytes; the source has enough of them.
    unsafe {
        std::ptr::copy_nonoverlapping(
            b.as_ptr(),
            (&mut v as *mut T).cast::<u8>(),
            std::mem::size_of::<T>(),
        )
    };
    v
}

fn sys_ioctl(fd: i32, cmd: libc::c_ulong, arg: u64) -> Result<(), i32> {
    // SAFETY: an ioctl on our own descriptor; the argument is either valid
    // memory of ours laid out as the command expects, or deliberately bad
    // (the kernel must cope: that is what is being tested).
    let r = unsafe { libc::ioctl(fd, cmd, arg as usize) };
    if r == 0 {
        Ok(())
    } else if r < 0 {
        Err(errno())
    } else {
        Err(-1000 - r)
    }
}

fn mmap_anon(addr: u64, len: usize, prot: i32, shared: bool, fixed: bool) -> Option<u64> {
    let mut flags = libc::MAP_ANONYMOUS
        | if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
    if fixed {
        flags |= libc::MAP_FIXED;
    }
    if prot == NONE {
        flags |= libc::MAP_NORESERVE;
    }
    // SAFETY: an anonymous mapping; with MAP_FIXED only over address ranges
    // this program owns and no Rust reference points into.
    let p = unsafe { libc::mmap(addr as usize as *mut libc::c_void, len, prot, flags, -1, 0) };
    (p != libc::MAP_FAILED).then_some(p as u64)
}

/// Makes `[addr, addr + len)` an inaccessible reservation (a "tombstone").
fn reserve(addr: u64, len: usize) -> Res {
    match mmap_anon(addr, len, NONE, false, true) {
        Some(a) if a == addr => Ok(()),
        _ => Err(format!("reserving {addr:#x}+{len:#x}: {}", ename(errno()))),
    }
}

fn sys_munmap(addr: u64, len: usize) -> Result<(), i32> {
    // SAFETY: only ranges this program mapped and tracks; no Rust reference
    // points into them.
    if unsafe { libc::munmap(addr as usize as *mut libc::c_void, len) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

fn sys_mprotect(addr: u64, len: usize, prot: i32) -> Result<(), i32> {
    // SAFETY: only ranges this program mapped and tracks.
    if unsafe { libc::mprotect(addr as usize as *mut libc::c_void, len, prot) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

fn sys_madvise(addr: u64, len: usize, advice: i32) -> Result<(), i32> {
    // SAFETY: only ranges this program mapped and tracks; the model of the
    // contents is updated by the caller.
    if unsafe { libc::madvise(addr as usize as *mut libc::c_void, len, advice) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// The ring header of a mapping at `.0` (which must be mapped readable for
/// loads and writable for stores while the methods run).
#[derive(Clone, Copy)]
struct Hdr(u64);

impl Hdr {
    fn at(self, off: usize) -> &'static AtomicU32 {
        // SAFETY: callers only use a `Hdr` of a ring mapping whose pages are
        // mapped with the needed protection (tracked in `RingMap::prot`);
        // the fields are 4-byte aligned; the kernel accesses them atomically.
        unsafe { &*((self.0 as usize + off) as *const AtomicU32) }
    }
    fn load(self, off: usize) -> u32 {
        self.at(off).load(Ordering::Acquire)
    }
    fn store(self, off: usize, v: u32) {
        self.at(off).store(v, Ordering::Release);
    }
    fn owner(self) -> u64 {
        // SAFETY: as in `at`; an 8-byte aligned field the kernel writes once.
        unsafe { std::ptr::read_volatile((self.0 as usize + H_OWNER) as *const u64) }
    }
    fn sq_invalid(self) -> u64 {
        // SAFETY: as in `at`; an 8-byte aligned field only the engine writes.
        unsafe { std::ptr::read_volatile((self.0 as usize + H_SQ_INVALID) as *const u64) }
    }
    fn write_sqe(self, index: u32, s: &warpq_sqe) {
        let slot = (index & (WARPQ_SQ_ENTRIES - 1)) as usize;
        let p = (self.0 as usize + WARPQ_RING_SQ_OFFSET + slot * 64) as *mut warpq_sqe;
        // SAFETY: the slot lies in the mapped, writable ring (see `at`); the
        // kernel copies entries with volatile reads and validates them.
        unsafe { std::ptr::write_volatile(p, *s) };
    }
    fn read_cqe(self, index: u32) -> warpq_cqe {
        let slot = (index & (WARPQ_CQ_ENTRIES - 1)) as usize;
        let p = (self.0 as usize + WARPQ_RING_CQ_OFFSET + slot * 32) as *const warpq_cqe;
        // SAFETY: the slot lies in the mapped, readable ring (see `at`).
        unsafe { std::ptr::read_volatile(p) }
    }
}

// ---- the fuzzer's model ----------------------------------------------------

/// One registration as the fuzzer knows it.
#[derive(Clone)]
struct Reg {
    handle: u64,
    addr: u64,
    len: u64,
    access: u32,
    /// Inside one buffer, all pages read/write at registration, and no
    /// munmap/mprotect/mremap of its range since: commands succeed.
    clean: bool,
    /// Only memory the fuzzer owns for good (buffers, tombstones): commands
    /// may write through it.
    dst_ok: bool,
}

/// One published command.
#[derive(Clone)]
struct Cmd {
    s: warpq_sqe,
    /// The status it must complete with (or ABORTED); `None`: unpredictable.
    status: Option<u32>,
    /// Nothing else may have touched its bytes while it was outstanding.
    content_ok: bool,
}

/// A mapping of the queue.
#[derive(Clone)]
struct RingMap {
    addr: u64,
    slot: usize,
    prot: [i32; RING_PAGES],
}

impl RingMap {
    fn readable(&self) -> bool {
        self.prot.iter().all(|&p| p != GONE && p & RD != 0)
    }
    fn writable(&self) -> bool {
        self.prot
            .iter()
            .all(|&p| p != GONE && p & libc::PROT_WRITE != 0)
    }
    fn any_mapped(&self) -> bool {
        self.prot.iter().any(|&p| p != GONE)
    }
}

/// One open file of the device (its queue for this process).
#[derive(Clone)]
struct FileSt {
    id: u32,
    fds: Vec<i32>,
    rdonly: bool,
    rings: Vec<RingMap>,
    regs: Vec<Reg>,
    dead_handles: Vec<u64>,
    /// The parent's handles (in a child): never valid here.
    foreign_handles: Vec<u64>,
    known: HashSet<u64>,
    fifo: VecDeque<Cmd>,
    /// The ring indices are not trustworthy: only status ranges and
    /// user_data membership are checked until a resync.
    garbage: bool,
    garbage_since: u64,
    /// `cq_tail - sq_head` when sane (each completion moves both).
    c_off: Option<u32>,
    /// The tail the header must show when sane.
    tail: Option<u32>,
    /// No kernel-owned index was ever overwritten (exact STATS checks).
    honest: bool,
    owner: Option<u64>,
    parent_owner: Option<u64>,
    /// A live child may hold this file open.
    inherited: bool,
}

impl FileSt {
    fn new(id: u32, fd: i32, rdonly: bool) -> Self {
        FileSt {
            id,
            fds: vec![fd],
            rdonly,
            rings: Vec::new(),
            regs: Vec::new(),
            dead_handles: Vec::new(),
            foreign_handles: Vec::new(),
            known: HashSet::new(),
            fifo: VecDeque::new(),
            garbage: false,
            garbage_since: 0,
            c_off: Some(0),
            tail: Some(0),
            honest: true,
            owner: None,
            parent_owner: None,
            inherited: false,
        }
    }
    fn read_ring(&self) -> Option<Hdr> {
        self.rings
            .iter()
            .find(|r| r.readable())
            .map(|r| Hdr(r.addr))
    }
    fn write_ring(&self) -> Option<Hdr> {
        self.rings
            .iter()
            .find(|r| r.writable())
            .map(|r| Hdr(r.addr))
    }
    fn alive(&self) -> bool {
        !self.fds.is_empty() || self.rings.iter().any(RingMap::any_mapped)
    }
}

/// A buffer mapping with its model; followed by a PROT_NONE guard page.
#[derive(Clone)]
struct Buf {
    id: u32,
    addr: u64,
    len: usize,
    shared: bool,
    /// Never split into several vmas (mprotect, partial munmap).
    whole: bool,
    prot: Vec<i32>,
    model: Vec<u8>,
    known: Vec<bool>,
}

impl Buf {
    fn pages(&self) -> usize {
        self.len / PAGE
    }
    fn end(&self) -> u64 {
        self.addr + self.len as u64
    }
    fn page_addr(&self, p: usize) -> u64 {
        self.addr + (p * PAGE) as u64
    }
}

struct Child {
    pid: i32,
    started: Instant,
}

#[derive(Default, Clone, Copy)]
struct Counters {
    steps: u64,
    ioctls: u64,
    commands: u64,
    completions: u64,
    forks: u64,
    faults: u64,
    aborted: u64,
    garbage: u64,
    /// Completions whose status was predicted exactly (and matched).
    predicted: u64,
    /// CRC32C results compared with the model.
    crcs: u64,
    /// Buffer bytes compared with the model.
    verified: u64,
    resyncs: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.predicted += o.predicted;
        self.crcs += o.crcs;
        self.verified += o.verified;
        self.resyncs += o.resyncs;
        self.garbage += o.garbage;
        self.aborted += o.aborted;
        self.completions += o.completions;
        self.commands += o.commands;
    }
}

/// Where an ioctl argument is placed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Normal,
    ReadOnly,
    Straddle,
    Null,
    Wild,
}

/// What an ioctl must return.
#[derive(Clone, Debug)]
enum Expect {
    Ok,
    Err(i32),
    OkOr(Vec<i32>),
    ErrIn(Vec<i32>),
    Any,
}

impl Expect {
    fn show(&self) -> String {
        match self {
            Expect::Ok => "success".into(),
            Expect::Err(e) => ename(*e),
            Expect::OkOr(l) => format!("success or {}", names(l)),
            Expect::ErrIn(l) => names(l),
            Expect::Any => "anything documented".into(),
        }
    }
    fn allows(&self, r: Result<(), i32>) -> bool {
        match (self, r) {
            (Expect::Any, _) | (Expect::Ok | Expect::OkOr(_), Ok(())) => true,
            (Expect::Err(x), Err(e)) => *x == e,
            (Expect::OkOr(l) | Expect::ErrIn(l), Err(e)) => l.contains(&e),
            _ => false,
        }
    }
}

/// Static configuration found at start.
struct Cfg {
    path: CString,
    dev_name: Option<String>,
    max_regions: usize,
    max_region_bytes: u64,
    edu_engine: bool,
    /// The kernel's `struct warpq_info` and `struct warpq_stats` sizes.
    info_size: usize,
    stats_size: usize,
    policy: u32,
    dma_translation: u32,
}

/// The command with its read and write ranges, if it touches memory at all
/// (entries the engine refuses before translating touch nothing).
fn touches(s: &warpq_sqe) -> (Span, Span) {
    let reserved = s.rsvd0 != 0 || s.rsvd1 != 0 || s.rsvd2 != [0, 0];
    let edu = s.flags == WARPQ_SQE_EDU_DMA;
    if reserved
        || (s.flags != 0 && !edu)
        || (edu && s.opcode != WARPQ_OP_COPY)
        || (edu && s.len > EDU_MAX)
    {
        return (None, None);
    }
    if s.len == 0 || s.len > MAX_CMD {
        return (None, None);
    }
    match s.opcode {
        WARPQ_OP_COPY => (Some((s.src, s.len)), Some((s.dst, s.len))),
        WARPQ_OP_FILL => (None, Some((s.dst, s.len))),
        WARPQ_OP_CRC32C => (Some((s.src, s.len)), None),
        _ => (None, None),
    }
}

fn cmd_touches(s: &warpq_sqe, a: u64, l: u64) -> bool {
    let (r, w) = touches(s);
    r.is_some_and(|(x, n)| overlaps(x, n, a, l)) || w.is_some_and(|(x, n)| overlaps(x, n, a, l))
}

/// A byte range `(address, length)` a command reads or writes, if any.
type Span = Option<(u64, u64)>;

enum Taint {
    Status,
    Content,
    Both,
}

/// Everything one process (the parent of a run, or a child) fuzzes with.
struct World<'c> {
    cfg: &'c Cfg,
    rng: Rng,
    seed: u64,
    step: u64,
    tag: u64,
    next_ud: u64,
    next_id: u32,
    files: Vec<FileSt>,
    /// Files closed while a child may still hold them: their queues may run.
    zombies: Vec<FileSt>,
    bufs: Vec<Buf>,
    /// PROT_NONE ranges that once held buffers (or guard pages): never given
    /// to anything but the fuzzer's own buffers.
    tombs: Vec<(u64, u64)>,
    window: u64,
    win_used: [bool; WIN_SLOTS],
    children: Vec<Child>,
    child: bool,
    n: Counters,
    /// The last steps and what they did, printed with a failure.
    history: VecDeque<String>,
    /// Time spent waiting for the children at the end of the run.
    child_wait: Duration,
}

impl<'c> World<'c> {
    fn new(cfg: &'c Cfg, seed: u64) -> Res<World<'c>> {
        let window = mmap_anon(0, WIN_SLOTS * SLOT_BYTES, NONE, false, false)
            .ok_or_else(|| format!("reserving the window: {}", ename(errno())))?;
        let mut win_used = [false; WIN_SLOTS];
        win_used[0] = true;
        win_used[WILD_SLOT] = true;
        sys_mprotect(window, PAGE, RW).map_err(|e| format!("scratch: {}", ename(e)))?;
        sys_mprotect(window + PAGE64, PAGE, RD).map_err(|e| format!("scratch: {}", ename(e)))?;
        let mut rng = Rng(splitmix(seed) | 1);
        let tag = 1 + rng.below(0x7fff_fffe);
        Ok(World {
            cfg,
            rng,
            seed,
            step: 0,
            tag,
            next_ud: 1,
            next_id: 1,
            files: Vec::new(),
            zombies: Vec::new(),
            bufs: Vec::new(),
            tombs: Vec::new(),
            window,
            win_used,
            children: Vec::new(),
            child: false,
            n: Counters::default(),
            history: VecDeque::new(),
            child_wait: Duration::ZERO,
        })
    }

    // ---- random choices ----------------------------------------------------

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.rng.below(n)
        }
    }
    fn idx(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.rng.below(100) < pct
    }
    fn new_ud(&mut self) -> u64 {
        let ud = (self.tag << 32) | self.next_ud;
        self.next_ud += 1;
        ud
    }
    fn new_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// Remembers what a step did (the last 80 entries are printed with a
    /// failure).
    fn log(&mut self, what: String) {
        if self.history.len() >= 80 {
            self.history.pop_front();
        }
        self.history.push_back(format!("{:>4} {what}", self.step));
    }

    fn history_text(&self) -> String {
        self.history.iter().map(|l| format!("\n    {l}")).collect()
    }

    /// What the fuzzer knows about the memory at `a` for file `fi`.
    fn explain(&self, fi: usize, a: u64) -> String {
        let mut out = format!("{a:#x}:");
        for r in self.files[fi]
            .regs
            .iter()
            .filter(|r| r.addr <= a && a < r.addr + r.len)
        {
            out += &format!(
                " region {:#x}+{:#x} access {} handle {:#x} clean {} dst_ok {};",
                r.addr, r.len, r.access, r.handle, r.clean, r.dst_ok
            );
        }
        for b in self.bufs.iter().filter(|b| b.addr <= a && a < b.end()) {
            let p = ((a - b.addr) / PAGE64) as usize;
            out += &format!(
                " buffer {} {:#x}+{:#x} ({}, page {p} prot {});",
                b.id,
                b.addr,
                b.len,
                if b.shared { "shared" } else { "private" },
                b.prot[p]
            );
        }
        if self.in_tomb(a, 1) {
            out += " tombstone;";
        }
        out
    }

    fn pick_action(&mut self) -> Act {
        let w = |e: &(Act, u64, u64)| if self.child { e.2 } else { e.1 };
        let total: u64 = WEIGHTS.iter().map(w).sum();
        let mut r = self.rng.below(total);
        for e in WEIGHTS {
            let x = if self.child { e.2 } else { e.1 };
            if r < x {
                return e.0;
            }
            r -= x;
        }
        Act::RingSubmit
    }

    fn pick_file(&mut self) -> Option<usize> {
        if self.files.is_empty() {
            None
        } else {
            Some(self.idx(self.files.len()))
        }
    }

    /// A file with a descriptor and one of its descriptors.
    fn pick_fd_file(&mut self) -> Option<(usize, i32)> {
        let with: Vec<usize> = (0..self.files.len())
            .filter(|&i| !self.files[i].fds.is_empty())
            .collect();
        if with.is_empty() {
            return None;
        }
        let fi = with[self.idx(with.len())];
        let i = self.idx(self.files[fi].fds.len());
        let fd = self.files[fi].fds[i];
        Some((fi, fd))
    }

    fn fd_of(&mut self, fi: usize) -> Option<i32> {
        let fds = &self.files[fi].fds;
        if fds.is_empty() {
            None
        } else {
            let i = self.idx(fds.len());
            Some(self.files[fi].fds[i])
        }
    }

    fn pick_buf(&mut self) -> Option<usize> {
        if self.bufs.is_empty() {
            None
        } else {
            Some(self.idx(self.bufs.len()))
        }
    }

    /// A run of consecutive mapped pages of buffer `bi`: `(first, count)`.
    fn pick_mapped_run(&mut self, bi: usize) -> Option<(usize, usize)> {
        let b = &self.bufs[bi];
        let mapped: Vec<usize> = (0..b.pages()).filter(|&p| b.prot[p] != GONE).collect();
        if mapped.is_empty() {
            return None;
        }
        let p = mapped[self.idx(mapped.len())];
        let b = &self.bufs[bi];
        let (mut lo, mut hi) = (p, p + 1);
        while lo > 0 && b.prot[lo - 1] != GONE {
            lo -= 1;
        }
        while hi < b.pages() && b.prot[hi] != GONE {
            hi += 1;
        }
        let first = lo + self.idx(p - lo + 1);
        let count = 1 + self.idx(hi - first);
        Some((first, count))
    }

    fn slot_addr(&self, slot: usize) -> u64 {
        self.window + (slot * SLOT_BYTES) as u64
    }
    fn in_window(&self, a: u64, l: u64) -> bool {
        overlaps(a, l.max(1), self.window, (WIN_SLOTS * SLOT_BYTES) as u64)
    }
    fn free_slot(&mut self) -> Option<usize> {
        let free: Vec<usize> = (1..WILD_SLOT).filter(|&s| !self.win_used[s]).collect();
        if free.is_empty() {
            None
        } else {
            Some(free[self.idx(free.len())])
        }
    }

    // ---- the model of buffer contents --------------------------------------

    fn buf_containing(&self, a: u64, l: u64) -> Option<usize> {
        self.bufs
            .iter()
            .position(|b| a >= b.addr && a.checked_add(l).is_some_and(|e| e <= b.end()))
    }

    fn mark_unknown(&mut self, a: u64, l: u64) {
        for b in &mut self.bufs {
            if overlaps(a, l, b.addr, b.len as u64) {
                let lo = a.max(b.addr) - b.addr;
                let hi = a.saturating_add(l).min(b.end()) - b.addr;
                b.known[lo as usize..hi as usize].fill(false);
            }
        }
    }

    fn model_bytes(&self, a: u64, l: u64) -> Option<Vec<u8>> {
        let bi = self.buf_containing(a, l)?;
        let b = &self.bufs[bi];
        let o = (a - b.addr) as usize;
        let r = o..o + l as usize;
        b.known[r.clone()]
            .iter()
            .all(|&k| k)
            .then(|| b.model[r].to_vec())
    }

    fn model_fill(&mut self, a: u64, l: u64, v: u8) {
        match self.buf_containing(a, l) {
            Some(bi) => {
                let b = &mut self.bufs[bi];
                let o = (a - b.addr) as usize;
                b.model[o..o + l as usize].fill(v);
                b.known[o..o + l as usize].fill(true);
            }
            None => self.mark_unknown(a, l),
        }
    }

    /// COPY: memmove semantics (the engine orders its page-bounded pieces
    /// so that overlapping ranges copy as one memmove).
    fn model_copy(&mut self, src: u64, dst: u64, len: u64) {
        let (Some(si), Some(di)) = (self.buf_containing(src, len), self.buf_containing(dst, len))
        else {
            self.mark_unknown(dst, len);
            return;
        };
        let so = (src - self.bufs[si].addr) as usize;
        let d = (dst - self.bufs[di].addr) as usize;
        let n = len as usize;
        let bytes = self.bufs[si].model[so..so + n].to_vec();
        let known = self.bufs[si].known[so..so + n].to_vec();
        self.bufs[di].model[d..d + n].copy_from_slice(&bytes);
        self.bufs[di].known[d..d + n].copy_from_slice(&known);
    }

    /// Nothing but the CPU can change (or is reading) `[a, a + l)` now.
    fn quiet(&self, a: u64, l: u64) -> bool {
        for f in self.files.iter().chain(self.zombies.iter()) {
            if f.fifo.iter().any(|c| cmd_touches(&c.s, a, l)) {
                return false;
            }
        }
        for f in self
            .files
            .iter()
            .filter(|f| f.garbage)
            .chain(self.zombies.iter())
        {
            if f.regs
                .iter()
                .any(|r| r.access & WARPQ_ACCESS_WRITE != 0 && overlaps(r.addr, r.len, a, l))
            {
                return false;
            }
        }
        let shared = self
            .bufs
            .iter()
            .any(|b| b.shared && overlaps(b.addr, b.len as u64, a, l));
        !(shared && (self.child || !self.children.is_empty()))
    }

    /// Outstanding commands touching `[a, a + l)` (of file `only`, or all)
    /// lose their status prediction and/or their content guarantee.
    fn taint(&mut self, a: u64, l: u64, t: Taint, only: Option<usize>) {
        let nfiles = self.files.len();
        for (i, f) in self
            .files
            .iter_mut()
            .chain(self.zombies.iter_mut())
            .enumerate()
        {
            if only.is_some_and(|o| o != i || i >= nfiles) {
                continue;
            }
            for c in f.fifo.iter_mut().filter(|c| cmd_touches(&c.s, a, l)) {
                if matches!(t, Taint::Status | Taint::Both) {
                    c.status = None;
                }
                if matches!(t, Taint::Content | Taint::Both) {
                    c.content_ok = false;
                }
            }
        }
    }

    /// An mm operation on `[a, a + l)` can kill every region overlapping it
    /// (a rebuild pins a region whole): the outstanding commands touching
    /// any of those regions lose their status prediction.
    fn taint_regions(&mut self, a: u64, l: u64) {
        for f in self.files.iter_mut().chain(self.zombies.iter_mut()) {
            let spans: Vec<(u64, u64)> = f
                .regs
                .iter()
                .filter(|r| overlaps(r.addr, r.len, a, l))
                .map(|r| (r.addr, r.len))
                .collect();
            for c in f.fifo.iter_mut() {
                if spans.iter().any(|&(ra, rl)| cmd_touches(&c.s, ra, rl)) {
                    c.status = None;
                }
            }
        }
    }

    fn regs_dirty(&mut self, a: u64, l: u64) {
        for f in self.files.iter_mut().chain(self.zombies.iter_mut()) {
            for r in f.regs.iter_mut().filter(|r| overlaps(r.addr, r.len, a, l)) {
                r.clean = false;
            }
        }
    }

    fn in_tomb(&self, a: u64, l: u64) -> bool {
        self.tombs.iter().any(|&(t, tl)| overlaps(t, tl, a, l))
    }

    /// Compares the known bytes of buffer `bi`'s readable pages.
    /// Compares the known bytes of buffer `bi`'s readable pages with the
    /// model, then adopts what it read for the bytes the model had lost
    /// (the caller checked nothing else can be writing them).
    fn verify_buf(&mut self, bi: usize) -> Res {
        let mut checked = 0;
        let mut got = vec![0u8; PAGE];
        let b = &mut self.bufs[bi];
        for p in 0..b.pages() {
            if b.prot[p] == GONE || b.prot[p] & RD == 0 {
                continue;
            }
            let o = p * PAGE;
            // SAFETY: the page is mapped readable (tracked in `prot`).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (b.addr as usize + o) as *const u8,
                    got.as_mut_ptr(),
                    PAGE,
                )
            };
            for i in 0..PAGE {
                if !b.known[o + i] {
                    b.model[o + i] = got[i];
                    b.known[o + i] = true;
                    continue;
                }
                checked += 1;
                if got[i] != b.model[o + i] {
                    let run = (i..PAGE)
                        .take_while(|&j| b.known[o + j] && got[j] != b.model[o + j])
                        .count();
                    return Err(format!(
                        "buffer {} ({}, {} pages at {:#x}) byte {:#x}: {:#04x}, the model says {:#04x} ({run} bytes differ from there)",
                        b.id,
                        if b.shared { "shared" } else { "private" },
                        b.pages(),
                        b.addr,
                        o + i,
                        got[i],
                        b.model[o + i]
                    ));
                }
            }
        }
        self.n.verified += checked;
        Ok(())
    }

    fn verify_all_quiet(&mut self) -> Res {
        for bi in 0..self.bufs.len() {
            let b = &self.bufs[bi];
            if self.quiet(b.addr, b.len as u64) {
                self.verify_buf(bi)?;
            }
        }
        Ok(())
    }

    // ---- ioctl plumbing ----------------------------------------------------

    fn place(&mut self) -> Place {
        match self.below(100) {
            0..=84 => Place::Normal,
            85..=89 => Place::ReadOnly,
            90..=93 => Place::Straddle,
            94..=96 => Place::Null,
            _ => Place::Wild,
        }
    }

    fn size_field(&mut self, v1: usize) -> u32 {
        let v1 = v1 as u32;
        match self.below(100) {
            0..=74 => v1,
            75..=82 => v1 + 1 + self.below(64) as u32,
            83..=85 => v1 + self.below(8192) as u32,
            86..=88 => u32::MAX,
            89..=95 => self.below(u64::from(v1)) as u32,
            _ => 0,
        }
    }

    fn cmd_bits(&mut self, cmd: libc::c_ulong) -> libc::c_ulong {
        if self.chance(10) {
            (cmd & !(0x3fff << 16)) | ((self.below(0x4000) as libc::c_ulong) << 16)
        } else {
            cmd
        }
    }

    /// Places `val` as `place` says, calls the ioctl, reads the structure
    /// back and checks the kernel wrote nothing around it.
    fn call<T: Plain>(
        &mut self,
        fd: i32,
        cmd: libc::c_ulong,
        val: &mut T,
        place: Place,
    ) -> Res<Result<(), i32>> {
        let sz = std::mem::size_of::<T>();
        assert!(sz <= PAGE, "an ioctl argument must fit in the scratch page");
        let page0 = self.window;
        let page1 = self.window + PAGE64;
        self.n.ioctls += 1;
        match place {
            Place::Normal => {
                let off = 8 * self.idx((PAGE - sz) / 8 + 1);
                // SAFETY: page 0 of the scratch slot is mapped read/write and
                // only ever accessed through raw pointers.
                unsafe {
                    std::ptr::write_bytes(page0 as usize as *mut u8, CANARY, PAGE);
                    std::ptr::copy_nonoverlapping(
                        as_bytes(val).as_ptr(),
                        (page0 as usize + off) as *mut u8,
                        sz,
                    );
                }
                let r = sys_ioctl(fd, cmd, page0 + off as u64);
                let mut after = vec![0u8; PAGE];
                // SAFETY: as above.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        page0 as usize as *const u8,
                        after.as_mut_ptr(),
                        PAGE,
                    )
                };
                *val = from_bytes(&after[off..off + sz]);
                if let Some(i) = after[..off]
                    .iter()
                    .chain(&after[off + sz..])
                    .position(|&b| b != CANARY)
                {
                    let at = if i < off {
                        i as i64 - off as i64
                    } else {
                        (i + sz - off) as i64
                    };
                    return Err(format!("ioctl {cmd:#x} wrote outside its {sz}-byte structure (byte {at} from its start)"));
                }
                Ok(r)
            }
            Place::ReadOnly | Place::Straddle => {
                let (off, n) = if place == Place::ReadOnly {
                    (8 * self.idx((PAGE - sz) / 8 + 1), sz)
                } else {
                    let k = if sz > 8 {
                        8 + 8 * self.idx((sz - 9) / 8 + 1)
                    } else {
                        4
                    };
                    (PAGE - k, k.min(sz))
                };
                sys_mprotect(page1, PAGE, RW).map_err(|e| format!("scratch: {}", ename(e)))?;
                // SAFETY: page 1 of the scratch slot is read/write right now.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        as_bytes(val).as_ptr(),
                        (page1 as usize + off) as *mut u8,
                        n,
                    )
                };
                sys_mprotect(page1, PAGE, RD).map_err(|e| format!("scratch: {}", ename(e)))?;
                Ok(sys_ioctl(fd, cmd, page1 + off as u64))
            }
            Place::Null => Ok(sys_ioctl(fd, cmd, 0)),
            Place::Wild => {
                let wild = [KERNEL_ADDR, self.slot_addr(WILD_SLOT), u64::MAX - 7, 1];
                let a = wild[self.idx(wild.len())];
                Ok(sys_ioctl(fd, cmd, a))
            }
        }
    }

    /// What a placement does to an ioctl whose semantics say `sem`.
    fn arg_expect(place: Place, size_ok: bool, writes_back: bool, sem: Expect) -> Expect {
        match place {
            Place::Null | Place::Wild => Expect::Err(libc::EFAULT),
            Place::Straddle if !size_ok => Expect::Err(libc::EINVAL),
            Place::Straddle => Expect::Err(libc::EFAULT),
            _ if !size_ok => Expect::Err(libc::EINVAL),
            // REGISTER and SUBMIT check that the argument is writable before
            // doing anything; INFO, STATS and WAIT fail writing it back.
            Place::ReadOnly if writes_back => Expect::Err(libc::EFAULT),
            _ => sem,
        }
    }

    fn check(what: &str, doc: &[i32], got: Result<(), i32>, exp: &Expect) -> Res {
        if let Err(e) = got {
            if !doc.contains(&e) {
                return Err(format!(
                    "{what}: {} is not in the documented set ({})",
                    ename(e),
                    names(doc)
                ));
            }
        }
        if !exp.allows(got) {
            return Err(format!(
                "{what}: got {}, expected {}",
                show(got),
                exp.show()
            ));
        }
        Ok(())
    }

    // ---- predictions -------------------------------------------------------

    /// The status the engine must give `s` on file `fi`'s queue now, if it
    /// can be known.
    fn predict(&self, fi: usize, s: &warpq_sqe) -> Option<u32> {
        let reserved = s.rsvd0 != 0 || s.rsvd1 != 0 || s.rsvd2 != [0, 0];
        let flagged = s.flags == WARPQ_SQE_EDU_DMA;
        if reserved || (s.flags != 0 && !flagged) || (flagged && s.opcode != WARPQ_OP_COPY) {
            return Some(WARPQ_STATUS_INVALID);
        }
        if flagged && s.len > EDU_MAX {
            return Some(WARPQ_STATUS_INVALID);
        }
        let edu = flagged || (s.opcode == WARPQ_OP_COPY && s.len <= EDU_MAX && self.cfg.edu_engine);
        if s.opcode == WARPQ_OP_NOP {
            return Some(WARPQ_STATUS_OK);
        }
        if s.len == 0 || s.len > MAX_CMD {
            return Some(WARPQ_STATUS_INVALID);
        }
        let xlate = |va: u64, access: u32| -> Result<(), Option<u32>> {
            let f = &self.files[fi];
            let r = f
                .regs
                .iter()
                .find(|r| r.addr <= va && va < r.addr + r.len)
                .ok_or(Some(WARPQ_STATUS_FAULT_UNREGISTERED))?;
            match va.checked_add(s.len) {
                Some(e) if e <= r.addr + r.len => {}
                _ => return Err(Some(WARPQ_STATUS_FAULT_BOUNDS)),
            }
            if r.access & access != access {
                return Err(Some(WARPQ_STATUS_FAULT_ACCESS));
            }
            if r.clean {
                Ok(())
            } else {
                Err(None)
            }
        };
        let r = match s.opcode {
            WARPQ_OP_COPY => {
                xlate(s.src, WARPQ_ACCESS_READ).and_then(|()| xlate(s.dst, WARPQ_ACCESS_WRITE))
            }
            WARPQ_OP_FILL => xlate(s.dst, WARPQ_ACCESS_WRITE),
            WARPQ_OP_CRC32C => xlate(s.src, WARPQ_ACCESS_READ),
            _ => return Some(WARPQ_STATUS_INVALID),
        };
        match r {
            Ok(()) if edu => None,
            Ok(()) => Some(WARPQ_STATUS_OK),
            Err(e) => e,
        }
    }

    /// Whether `s` on file `fi` can race with anything else touching its
    /// bytes; marks the other side's commands too.
    fn content_ok(&mut self, fi: usize, s: &warpq_sqe) -> bool {
        let (rd, wr) = touches(s);
        let mut ok = true;
        let nfiles = self.files.len();
        for (j, f) in self
            .files
            .iter_mut()
            .chain(self.zombies.iter_mut())
            .enumerate()
        {
            if j == fi && j < nfiles {
                continue;
            }
            for c in f.fifo.iter_mut() {
                let (cr, cw) = touches(&c.s);
                let hit = |x: Span, y: Span| match (x, y) {
                    (Some((a, al)), Some((b, bl))) => overlaps(a, al, b, bl),
                    _ => false,
                };
                if hit(cw, rd) || hit(cw, wr) || hit(wr, cr) {
                    c.content_ok = false;
                    ok = false;
                }
            }
            if f.garbage || j >= nfiles {
                for r in f.regs.iter().filter(|r| r.access & WARPQ_ACCESS_WRITE != 0) {
                    if rd.is_some_and(|(a, l)| overlaps(a, l, r.addr, r.len))
                        || wr.is_some_and(|(a, l)| overlaps(a, l, r.addr, r.len))
                    {
                        ok = false;
                    }
                }
            }
        }
        let shared_busy = self.child || !self.children.is_empty();
        for (a, l) in [rd, wr].into_iter().flatten() {
            if shared_busy
                && self
                    .bufs
                    .iter()
                    .any(|b| b.shared && overlaps(b.addr, b.len as u64, a, l))
            {
                ok = false;
            }
        }
        ok
    }

    // ---- submission entries ------------------------------------------------

    fn gen_len(&mut self) -> u64 {
        match self.below(100) {
            0..=44 => 1 + self.below(512),
            45..=64 => 1 + self.below(PAGE64),
            65..=79 => PAGE64 * (1 + self.below(16)),
            80..=84 => 0,
            85..=87 => MAX_CMD + 1 + self.below(1 << 20),
            88..=89 => u64::MAX - self.below(4096),
            90..=91 => MAX_CMD,
            _ => 1 + self.below(64 * PAGE64),
        }
    }

    fn gen_addr(&mut self, fi: usize, len: u64, write: bool) -> u64 {
        let regs: Vec<(u64, u64)> = self.files[fi]
            .regs
            .iter()
            .filter(|r| !write || r.dst_ok)
            .map(|r| (r.addr, r.len))
            .collect();
        let len = len.max(1);
        let v = self.below(100);
        let a = if v < 60 && !regs.is_empty() {
            let (ra, rl) = regs[self.idx(regs.len())];
            if len <= rl {
                ra + self.below(rl - len + 1)
            } else {
                ra
            }
        } else if v < 72 && !regs.is_empty() {
            let (ra, rl) = regs[self.idx(regs.len())];
            ra + rl - 1 - self.below(len.min(rl))
        } else if v < 82 && !self.bufs.is_empty() {
            let bi = self.idx(self.bufs.len());
            self.bufs[bi].addr + self.below(self.bufs[bi].len as u64)
        } else if v < 88 && !self.tombs.is_empty() {
            let ti = self.idx(self.tombs.len());
            let (t, tl) = self.tombs[ti];
            t + self.below(tl)
        } else if v < 94 {
            let weird = [
                0,
                u64::MAX - self.below(4096),
                KERNEL_ADDR + self.below(1 << 30),
                0x1000,
                1 << 47,
            ];
            weird[self.idx(weird.len())]
        } else if v < 97 {
            self.rng.next_u64() | if write { 1 << 63 } else { 0 }
        } else if !write && !self.files[fi].rings.is_empty() {
            let r = self.idx(self.files[fi].rings.len());
            self.files[fi].rings[r].addr + self.below(RING64)
        } else {
            0
        };
        if write && self.in_window(a, 1) {
            0
        } else {
            a
        }
    }

    fn gen_sqe(&mut self, fi: usize) -> warpq_sqe {
        let user_data = self.new_ud();
        let opcode = match self.below(100) {
            0..=34 => WARPQ_OP_FILL,
            35..=59 => WARPQ_OP_COPY,
            60..=79 => WARPQ_OP_CRC32C,
            80..=89 => WARPQ_OP_NOP,
            _ => self.below(256) as u8,
        };
        let flags = match self.below(100) {
            0..=91 => 0,
            92..=96 => WARPQ_SQE_EDU_DMA,
            _ => self.below(256) as u8,
        };
        let mut s = warpq_sqe {
            opcode,
            flags,
            user_data,
            ..Default::default()
        };
        s.len = self.gen_len();
        if flags == WARPQ_SQE_EDU_DMA && self.chance(70) {
            s.len = 1 + self.below(EDU_MAX);
        }
        s.src = self.gen_addr(fi, s.len, false);
        s.dst = self.gen_addr(fi, s.len, true);
        let edu = flags == WARPQ_SQE_EDU_DMA || (flags == 0 && self.cfg.edu_engine);
        if opcode == WARPQ_OP_COPY && edu && self.chance(30) {
            // The edu engine's edge: one whole page, page-aligned both sides.
            s.len = PAGE64;
            if let Some(a) = self.page_in_reg(fi, false) {
                s.src = a;
            }
            if let Some(a) = self.page_in_reg(fi, true) {
                s.dst = a;
            }
        }
        s.value = self.rng.next_u64();
        if self.chance(3) {
            match self.below(3) {
                0 => s.rsvd0 = 1 + self.below(0xffff) as u16,
                1 => s.rsvd1 = 1 + self.below(0xffff_fffe) as u32,
                _ => s.rsvd2[self.idx(2)] = 1 + self.below(u64::MAX - 1),
            }
        }
        s
    }

    /// A page-aligned page inside one of file `fi`'s registrations (one the
    /// device may write through, for a destination).
    fn page_in_reg(&mut self, fi: usize, write: bool) -> Option<u64> {
        let regs: Vec<(u64, u64)> = self.files[fi]
            .regs
            .iter()
            .filter(|r| !write || r.dst_ok)
            .map(|r| (r.addr, r.len))
            .collect();
        if regs.is_empty() {
            return None;
        }
        let (a, l) = regs[self.idx(regs.len())];
        Some(a + PAGE64 * self.below(l / PAGE64))
    }

    /// Records a published command of file `fi` (sane rings only).
    fn outstanding(&mut self, fi: usize, s: warpq_sqe) {
        let status = self.predict(fi, &s);
        let content_ok = self.content_ok(fi, &s);
        self.files[fi].fifo.push_back(Cmd {
            s,
            status,
            content_ok,
        });
        self.n.commands += 1;
    }

    // ---- completions -------------------------------------------------------

    /// Consumes the completions of file `fi`'s queue and checks each.
    fn reap(&mut self, fi: usize) -> Res {
        let (Some(r), Some(w)) = (self.files[fi].read_ring(), self.files[fi].write_ring()) else {
            return Ok(());
        };
        self.check_header(fi, r)?;
        let head = r.load(H_CQ_HEAD);
        let tail = r.load(H_CQ_TAIL);
        let n = tail.wrapping_sub(head);
        if n == 0 {
            return Ok(());
        }
        if n > WARPQ_CQ_ENTRIES {
            if self.files[fi].garbage {
                w.store(H_CQ_HEAD, tail);
                return Ok(());
            }
            return Err(format!("file {}: cq_tail {tail} - cq_head {head} = {n} > {WARPQ_CQ_ENTRIES} in a sane ring", self.files[fi].id));
        }
        for i in 0..n {
            let c = r.read_cqe(head.wrapping_add(i));
            self.completion(fi, &c)?;
        }
        w.store(H_CQ_HEAD, tail);
        Ok(())
    }

    fn completion(&mut self, fi: usize, c: &warpq_cqe) -> Res {
        self.n.completions += 1;
        let id = self.files[fi].id;
        if c.status > WARPQ_STATUS_DEVICE_ERROR || c.rsvd != 0 || c.rsvd2 != 0 {
            return Err(format!(
                "file {id}: completion {:#x} has status {} rsvd {:#x} rsvd2 {:#x}",
                c.user_data, c.status, c.rsvd, c.rsvd2
            ));
        }
        if (WARPQ_STATUS_FAULT_UNREGISTERED..=WARPQ_STATUS_FAULT_IOMMU).contains(&c.status) {
            self.n.faults += 1;
        }
        if c.status == WARPQ_STATUS_ABORTED {
            self.n.aborted += 1;
        }
        if c.status != WARPQ_STATUS_OK && c.result != 0 {
            return Err(format!(
                "file {id}: completion {:#x} failed with status {} but result {:#x}",
                c.user_data, c.status, c.result
            ));
        }
        let f = &mut self.files[fi];
        if f.garbage {
            if !f.known.contains(&c.user_data) && c.user_data != 0 {
                return Err(format!("file {id}: completion with user_data {:#x} that was never submitted on this queue", c.user_data));
            }
            return Ok(());
        }
        let Some(cmd) = f.fifo.pop_front() else {
            return Err(format!(
                "file {id}: completion {:#x} (status {}) with no command outstanding{}",
                c.user_data,
                c.status,
                if f.known.contains(&c.user_data) {
                    " (a duplicate)"
                } else {
                    " (never submitted)"
                }
            ));
        };
        let s = cmd.s;
        if c.user_data != s.user_data {
            return Err(format!(
                "file {id}: completion {:#x} arrived where {:#x} was next ({}); {} more outstanding",
                c.user_data,
                s.user_data,
                if f.known.contains(&c.user_data) { "out of order or duplicate" } else { "never submitted" },
                f.fifo.len()
            ));
        }
        if let Some(p) = cmd.status {
            self.n.predicted += u64::from(c.status == p);
            if c.status != p && c.status != WARPQ_STATUS_ABORTED {
                let (src, dst) = (self.explain(fi, s.src), self.explain(fi, s.dst));
                let stats = self.queue_stats(fi);
                return Err(format!(
                    "file {id}: command {:#x} (op {} flags {:#x} src {:#x} dst {:#x} len {:#x}) completed with status {}, expected {p}\n  src {src}\n  dst {dst}\n  queue {stats}",
                    s.user_data, s.opcode, s.flags, s.src, s.dst, s.len, c.status
                ));
            }
        }
        let (_, wr) = touches(&s);
        match c.status {
            WARPQ_STATUS_OK => {
                let expect_len = match s.opcode {
                    WARPQ_OP_FILL | WARPQ_OP_COPY => Some(s.len),
                    WARPQ_OP_NOP => Some(0),
                    _ => None,
                };
                if let Some(l) = expect_len {
                    if c.result != l {
                        return Err(format!(
                            "file {id}: command {:#x} (op {}) result {:#x}, expected {l:#x}",
                            s.user_data, s.opcode, c.result
                        ));
                    }
                }
                match s.opcode {
                    WARPQ_OP_FILL if cmd.content_ok => self.model_fill(s.dst, s.len, s.value as u8),
                    WARPQ_OP_COPY if cmd.content_ok => self.model_copy(s.src, s.dst, s.len),
                    WARPQ_OP_CRC32C if cmd.content_ok => {
                        if let Some(bytes) = self.model_bytes(s.src, s.len) {
                            let want = u64::from(crc32c(s.value as u32, &bytes));
                            self.n.crcs += 1;
                            if c.result != want {
                                return Err(format!(
                                    "file {id}: CRC32C {:#x} of {:#x}+{:#x}: {:#x}, the model says {want:#x}",
                                    s.user_data, s.src, s.len, c.result
                                ));
                            }
                        }
                    }
                    _ => {
                        if let Some((a, l)) = wr {
                            self.mark_unknown(a, l);
                        }
                    }
                }
            }
            WARPQ_STATUS_ABORTED | WARPQ_STATUS_FAULT_IOMMU | WARPQ_STATUS_DEVICE_ERROR => {
                if let Some((a, l)) = wr {
                    self.mark_unknown(a, l);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The queue's counters, for failure reports.
    fn queue_stats(&self, fi: usize) -> String {
        let Some(&fd) = self.files[fi].fds.first() else {
            return "(no descriptor)".into();
        };
        let mut b = StatsBuf::default();
        b.s.size = std::mem::size_of::<StatsBuf>() as u32;
        let r = sys_ioctl(fd, WARPQ_IOC_STATS, &mut b as *mut StatsBuf as u64);
        let v = b.s;
        match r {
            Ok(()) => format!(
                "invalidations {} by event {:?} ignored {} teardowns {} drains {} drain_timeouts {} rebuilds {} (+{} retries) pinned {} by status {:?}",
                v.invalidations,
                v.invalidations_by_event,
                v.ignored_by_policy,
                v.teardowns,
                v.drains,
                v.drain_timeouts,
                v.rebuilds,
                v.rebuild_retries,
                v.pages_pinned,
                v.commands_by_status
            ),
            Err(e) => format!("(STATS: {})", ename(e)),
        }
    }

    /// Header checks that hold whatever the fuzzer did to the indices.
    fn check_header(&mut self, fi: usize, h: Hdr) -> Res {
        let id = self.files[fi].id;
        let magic = h.load(H_MAGIC);
        let version = h.load(H_VERSION);
        if magic != WARPQ_RING_MAGIC || version != WARPQ_UAPI_VERSION {
            return Err(format!(
                "file {id}: ring header magic {magic:#x} version {version}"
            ));
        }
        let owner = h.owner();
        let f = &mut self.files[fi];
        match f.owner {
            None => {
                if f.parent_owner == Some(owner) {
                    return Err(format!(
                        "file {id}: the child sees its parent's queue (owner_id {owner:#x})"
                    ));
                }
                f.owner = Some(owner);
            }
            Some(o) if o != owner => {
                return Err(format!(
                    "file {id}: ring owner_id changed from {o:#x} to {owner:#x}"
                ));
            }
            _ => {}
        }
        if f.garbage {
            return Ok(());
        }
        let tail = h.load(H_SQ_TAIL);
        if let Some(t) = f.tail {
            if t != tail {
                return Err(format!(
                    "file {id}: sq_tail is {tail}, the fuzzer last published {t}"
                ));
            }
        }
        let sh = h.load(H_SQ_HEAD);
        if tail.wrapping_sub(sh) > WARPQ_SQ_ENTRIES {
            return Err(format!("file {id}: sq_head {sh} is past sq_tail {tail}"));
        }
        if let Some(c) = f.c_off {
            // Each completion moves cq_tail, then sq_head: with sq_head
            // unchanged around the read, cq_tail - sq_head is c or c + 1.
            for _ in 0..100 {
                let sh1 = h.load(H_SQ_HEAD);
                let ct = h.load(H_CQ_TAIL);
                let sh2 = h.load(H_SQ_HEAD);
                if sh1 != sh2 {
                    continue;
                }
                let d = ct.wrapping_sub(sh1).wrapping_sub(c);
                if d > 1 {
                    return Err(format!(
                        "file {id}: cq_tail {ct} and sq_head {sh1} disagree: every completion consumes one submission (offset {c})"
                    ));
                }
                break;
            }
        }
        Ok(())
    }

    fn enter_garbage(&mut self, fi: usize) {
        let step = self.step;
        let f = &mut self.files[fi];
        let pending: Vec<warpq_sqe> = f.fifo.drain(..).map(|c| c.s).collect();
        let regs: Vec<(u64, u64)> = f
            .regs
            .iter()
            .filter(|r| r.access & WARPQ_ACCESS_WRITE != 0)
            .map(|r| (r.addr, r.len))
            .collect();
        if !f.garbage {
            f.garbage_since = step;
        }
        f.garbage = true;
        f.c_off = None;
        f.tail = None;
        self.n.garbage += 1;
        for s in pending {
            if let (_, Some((a, l))) = touches(&s) {
                self.mark_unknown(a, l);
            }
        }
        for (a, l) in regs {
            self.mark_unknown(a, l);
            // Another file's command still queued over these bytes must not
            // make them known again when it completes: this ring may still
            // rewrite them.
            self.taint(a, l, Taint::Content, None);
        }
    }

    // ---- actions -----------------------------------------------------------

    fn act(&mut self, a: Act) -> Res {
        self.log(a.name().to_string());
        match a {
            Act::NewBuf => self.act_new_buf(),
            Act::Register => self.act_register(),
            Act::Unregister => self.act_unregister(),
            Act::Info => self.act_info(),
            Act::Stats => self.act_stats(),
            Act::Wait => self.act_wait(),
            Act::Wake => self.act_wake(),
            Act::SubmitIoctl => self.act_submit_ioctl(),
            Act::UnknownIoctl => self.act_unknown_ioctl(),
            Act::RingSubmit => self.act_ring_submit(),
            Act::Drain => match self.pick_file() {
                Some(fi) if self.files[fi].garbage => self.resync(fi),
                Some(fi) => self.drain(fi),
                None => Ok(()),
            },
            Act::GarbageTail => self.act_garbage_tail(),
            Act::CorruptHeader => self.act_corrupt_header(),
            Act::Resync => match self.pick_file() {
                Some(fi) => self.resync(fi),
                None => Ok(()),
            },
            Act::MapRing => self.act_map_ring(),
            Act::UnmapRing => self.act_unmap_ring(),
            Act::MprotectRing => self.act_mprotect_ring(),
            Act::MremapRing => self.act_mremap_ring(),
            Act::DontneedRing => self.act_dontneed_ring(),
            Act::UnmapBuf => self.act_unmap_buf(),
            Act::MprotectBuf => self.act_mprotect_buf(),
            Act::MremapBuf => self.act_mremap_buf(),
            Act::DontneedBuf => self.act_dontneed_buf(),
            Act::CpuWrite => self.act_cpu_write(),
            Act::CpuVerify => match self.pick_buf() {
                Some(bi) if self.quiet(self.bufs[bi].addr, self.bufs[bi].len as u64) => {
                    self.verify_buf(bi)
                }
                _ => Ok(()),
            },
            Act::Fork => self.act_fork(),
            Act::Dup => self.act_dup(),
            Act::CloseFd => self.act_close(),
            Act::Open => self.act_open(),
            Act::ExitNow => self.child_exit(true),
            Act::Setup | Act::Cleanup => Ok(()),
        }
    }

    /// Invariants after every step.
    fn after_step(&mut self) -> Res {
        for fi in 0..self.files.len() {
            self.reap(fi)?;
        }
        for fi in 0..self.files.len() {
            let f = &self.files[fi];
            // Readable mappings of one queue alias the same pages.
            let tails: Vec<u32> = f
                .rings
                .iter()
                .filter(|r| r.readable())
                .map(|r| Hdr(r.addr).load(H_SQ_TAIL))
                .collect();
            if tails.windows(2).any(|w| w[0] != w[1]) {
                return Err(format!(
                    "file {}: two mappings of one queue show different sq_tails {tails:?}",
                    f.id
                ));
            }
            if f.garbage && self.step.saturating_sub(f.garbage_since) > 40 {
                self.resync(fi)?;
            }
        }
        // A file left with ring mappings and no descriptor cannot be woken
        // or resynchronised: now and then let it go (its last unmap
        // releases it), or its commands would keep its buffers busy.
        if self.step % 32 == 31 {
            let stuck = self.files.iter().position(|f| f.fds.is_empty());
            if let Some(fi) = stuck {
                self.log(format!(
                    "  file {}: letting go of its rings",
                    self.files[fi].id
                ));
                for r in std::mem::take(&mut self.files[fi].rings) {
                    sys_munmap(r.addr, WARPQ_RING_SIZE)
                        .map_err(|e| format!("munmap ring: {}", ename(e)))?;
                    reserve(r.addr, WARPQ_RING_SIZE)?;
                    self.win_used[r.slot] = false;
                }
                self.release_file(fi);
            }
        }
        if self.step & 3 == 0 {
            self.verify_all_quiet()?;
        }
        if !self.child {
            self.reap_children(false)?;
        }
        Ok(())
    }

    fn act_open(&mut self) -> Res {
        if self.files.len() >= MAX_FILES {
            return Ok(());
        }
        let rdonly = self.chance(10);
        let flags = if rdonly { libc::O_RDONLY } else { libc::O_RDWR };
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(self.cfg.path.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open {:?}: {}", self.cfg.path, ename(errno())));
        }
        let id = self.new_id();
        self.log(format!(
            "  file {id}: fd {fd}{}",
            if rdonly { " read-only" } else { "" }
        ));
        self.files.push(FileSt::new(id, fd, rdonly));
        Ok(())
    }

    fn act_dup(&mut self) -> Res {
        let Some((fi, fd)) = self.pick_fd_file() else {
            return self.act_open();
        };
        if self.files[fi].fds.len() >= MAX_FDS {
            return Ok(());
        }
        // SAFETY: duplicating our own descriptor.
        let nfd = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if nfd < 0 {
            return Err(format!("dup: {}", ename(errno())));
        }
        self.log(format!("  file {}: fd {nfd}", self.files[fi].id));
        self.files[fi].fds.push(nfd);
        Ok(())
    }

    fn act_close(&mut self) -> Res {
        let Some((fi, fd)) = self.pick_fd_file() else {
            return Ok(());
        };
        // SAFETY: closing our own descriptor (tracked; never reused here).
        if unsafe { libc::close(fd) } != 0 {
            return Err(format!("close: {}", ename(errno())));
        }
        self.files[fi].fds.retain(|&x| x != fd);
        self.log(format!("  file {}: closed fd {fd}", self.files[fi].id));
        if !self.files[fi].alive() {
            self.release_file(fi);
        }
        Ok(())
    }

    /// The file's last reference is gone: its queue is torn down.
    fn release_file(&mut self, fi: usize) {
        let f = self.files.remove(fi);
        for c in &f.fifo {
            if let (_, Some((a, l))) = touches(&c.s) {
                self.mark_unknown(a, l);
            }
        }
        if f.garbage {
            for r in f.regs.iter().filter(|r| r.access & WARPQ_ACCESS_WRITE != 0) {
                self.mark_unknown(r.addr, r.len);
            }
        }
        if f.inherited && !self.children.is_empty() {
            self.zombies.push(f);
        }
    }

    fn act_new_buf(&mut self) -> Res {
        if self.bufs.len() >= MAX_BUFS {
            return self.act_cpu_write();
        }
        // Sometimes a buffer over a tombstone: stale registrations follow it.
        let reuse = self.chance(20) && !self.tombs.is_empty();
        let (addr, pages, shared) = if reuse {
            let ti = self.idx(self.tombs.len());
            let (t, tl) = self.tombs[ti];
            if tl < PAGE64
                || self
                    .bufs
                    .iter()
                    .any(|b| overlaps(b.addr, b.len as u64 + PAGE64, t, tl))
            {
                return Ok(());
            }
            // The last page stays a tombstone: the new buffer's guard.
            let pages = (tl / PAGE64) as usize - 1;
            if pages == 0 {
                return Ok(());
            }
            let body = (pages * PAGE) as u64;
            self.tombs.retain(|&(a, l)| !overlaps(a, l, t, body));
            self.tombs.push((t + body, PAGE64));
            let shared = self.chance(25);
            if mmap_anon(t, pages * PAGE, RW, shared, true) != Some(t) {
                return Err(format!(
                    "mmap over a tombstone at {t:#x}: {}",
                    ename(errno())
                ));
            }
            (t, pages, shared)
        } else {
            let pages = if self.chance(80) {
                1 + self.idx(16)
            } else {
                17 + self.idx(48)
            };
            let shared = self.chance(25);
            let base = mmap_anon(0, (pages + 1) * PAGE, NONE, false, false)
                .ok_or_else(|| format!("mmap {} pages: {}", pages + 1, ename(errno())))?;
            if mmap_anon(base, pages * PAGE, RW, shared, true) != Some(base) {
                return Err(format!(
                    "mmap {pages} pages at {base:#x}: {}",
                    ename(errno())
                ));
            }
            self.tombs.push((base + (pages * PAGE) as u64, PAGE64));
            (base, pages, shared)
        };
        let len = pages * PAGE;
        let model = pattern(self.rng.next_u64(), len);
        // SAFETY: freshly mapped read/write, `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(model.as_ptr(), addr as usize as *mut u8, len) };
        let id = self.new_id();
        self.log(format!(
            "  buffer {id} at {addr:#x}, {pages} pages, {}{}",
            if shared { "shared" } else { "private" },
            if reuse { ", over a tombstone" } else { "" }
        ));
        self.bufs.push(Buf {
            id,
            addr,
            len,
            shared,
            whole: true,
            prot: vec![RW; pages],
            model,
            known: vec![true; len],
        });
        Ok(())
    }

    fn act_cpu_write(&mut self) -> Res {
        let Some(bi) = self.pick_buf() else {
            return Ok(());
        };
        let b = &self.bufs[bi];
        let p0 = self.idx(b.pages());
        let n = 1 + self.idx(self.bufs[bi].pages() - p0);
        let (a, l) = (self.bufs[bi].page_addr(p0), (n * PAGE) as u64);
        let seed = self.rng.next_u64();
        if !self.quiet(a, l) {
            return Ok(());
        }
        let data = pattern(seed, n * PAGE);
        self.log(format!(
            "  buffer {} pages {p0}..{}",
            self.bufs[bi].id,
            p0 + n
        ));
        let b = &mut self.bufs[bi];
        for p in p0..p0 + n {
            if b.prot[p] != RW {
                continue;
            }
            let o = p * PAGE;
            let src = &data[(p - p0) * PAGE..(p - p0 + 1) * PAGE];
            // SAFETY: the page is mapped read/write (tracked in `prot`).
            unsafe {
                std::ptr::copy_nonoverlapping(src.as_ptr(), (b.addr as usize + o) as *mut u8, PAGE)
            };
            b.model[o..o + PAGE].copy_from_slice(src);
            b.known[o..o + PAGE].fill(true);
        }
        Ok(())
    }

    fn act_unmap_buf(&mut self) -> Res {
        let Some(bi) = self.pick_buf() else {
            return self.act_new_buf();
        };
        let (p0, n) = if self.chance(60) {
            (0, self.bufs[bi].pages())
        } else {
            match self.pick_mapped_run(bi) {
                Some(r) => r,
                None => return Ok(()),
            }
        };
        let (a, l) = (self.bufs[bi].page_addr(p0), n * PAGE);
        self.log(format!(
            "  buffer {} pages {p0}..{} ({a:#x}+{l:#x})",
            self.bufs[bi].id,
            p0 + n
        ));
        self.taint(a, l as u64, Taint::Both, None);
        self.taint_regions(a, l as u64);
        self.regs_dirty(a, l as u64);
        self.mark_unknown(a, l as u64);
        sys_munmap(a, l).map_err(|e| format!("munmap buffer: {}", ename(e)))?;
        reserve(a, l)?;
        self.tombs.push((a, l as u64));
        let b = &mut self.bufs[bi];
        b.prot[p0..p0 + n].fill(GONE);
        if n != b.pages() {
            b.whole = false;
        }
        if b.prot.iter().all(|&p| p == GONE) {
            self.bufs.remove(bi);
        }
        Ok(())
    }

    fn act_mprotect_buf(&mut self) -> Res {
        let Some(bi) = self.pick_buf() else {
            return self.act_new_buf();
        };
        let Some((p0, n)) = self.pick_mapped_run(bi) else {
            return Ok(());
        };
        let prot = [RD, NONE, RW, RW][self.idx(4)];
        let (a, l) = (self.bufs[bi].page_addr(p0), n * PAGE);
        self.log(format!(
            "  buffer {} pages {p0}..{} ({a:#x}+{l:#x}) to {prot:#x}",
            self.bufs[bi].id,
            p0 + n
        ));
        self.taint(a, l as u64, Taint::Status, None);
        self.taint_regions(a, l as u64);
        self.regs_dirty(a, l as u64);
        sys_mprotect(a, l, prot).map_err(|e| format!("mprotect buffer: {}", ename(e)))?;
        let b = &mut self.bufs[bi];
        b.prot[p0..p0 + n].fill(prot);
        b.whole = false;
        Ok(())
    }

    fn act_mremap_buf(&mut self) -> Res {
        let Some(bi) = self.pick_buf() else {
            return self.act_new_buf();
        };
        let b = &self.bufs[bi];
        if !b.whole || b.prot.iter().any(|&p| p != RW) {
            return self.act_dontneed_buf();
        }
        let g = self.idx(3);
        let b = &self.bufs[bi];
        let grow = if b.shared { 0 } else { g };
        let (old, old_len, new_len) = (b.addr, b.len, b.len + grow * PAGE);
        // The target: a fresh reservation one page longer, whose last page
        // stays as the moved buffer's guard.
        let ph = mmap_anon(0, new_len + PAGE, NONE, false, false)
            .ok_or_else(|| format!("mmap: {}", ename(errno())))?;
        let quiet = self.quiet(old, old_len as u64);
        self.taint(old, old_len as u64, Taint::Both, None);
        self.taint(ph, new_len as u64, Taint::Both, None);
        self.taint_regions(old, old_len as u64);
        self.regs_dirty(old, old_len as u64);
        self.regs_dirty(ph, new_len as u64);
        // SAFETY: moves our own buffer mapping onto our own reservation.
        let r = unsafe {
            libc::mremap(
                old as usize as *mut libc::c_void,
                old_len,
                new_len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                ph as usize as *mut libc::c_void,
            )
        };
        if r as u64 != ph {
            return Err(format!(
                "mremap buffer {old:#x}+{old_len:#x} to {ph:#x}+{new_len:#x}: {}",
                ename(errno())
            ));
        }
        self.log(format!(
            "  buffer {} {old:#x}+{old_len:#x} to {ph:#x}+{new_len:#x} (quiet {quiet})",
            self.bufs[bi].id
        ));
        reserve(old, old_len)?;
        self.tombs.push((old, old_len as u64));
        self.tombs.push((ph + new_len as u64, PAGE64));
        let b = &mut self.bufs[bi];
        b.addr = ph;
        b.len = new_len;
        b.prot.resize(new_len / PAGE, RW);
        b.model.resize(new_len, 0);
        b.known.resize(new_len, true);
        if !quiet {
            b.known.fill(false);
        }
        Ok(())
    }

    fn act_dontneed_buf(&mut self) -> Res {
        let Some(bi) = self.pick_buf() else {
            return self.act_new_buf();
        };
        let Some((p0, n)) = self.pick_mapped_run(bi) else {
            return Ok(());
        };
        let (a, l) = (self.bufs[bi].page_addr(p0), n * PAGE);
        let quiet = self.quiet(a, l as u64);
        self.log(format!(
            "  buffer {} pages {p0}..{} ({a:#x}+{l:#x}) quiet {quiet}",
            self.bufs[bi].id,
            p0 + n
        ));
        if !quiet {
            self.taint(a, l as u64, Taint::Content, None);
            self.mark_unknown(a, l as u64);
        }
        sys_madvise(a, l, libc::MADV_DONTNEED)
            .map_err(|e| format!("madvise(DONTNEED) buffer: {}", ename(e)))?;
        let b = &mut self.bufs[bi];
        if quiet && !b.shared {
            // Private anonymous memory reads back as zeros; shared memory
            // keeps its contents.
            b.model[p0 * PAGE..(p0 + n) * PAGE].fill(0);
            b.known[p0 * PAGE..(p0 + n) * PAGE].fill(true);
        }
        Ok(())
    }

    // ---- ring mappings -------------------------------------------------------

    fn act_map_ring(&mut self) -> Res {
        let Some(fi) = self.pick_file() else {
            return self.act_open();
        };
        if self.files[fi].rings.len() >= MAX_RINGS {
            return self.act_unmap_ring();
        }
        let Some(fd) = self.fd_of(fi) else {
            return Ok(());
        };
        let rdonly = self.files[fi].rdonly;
        let v = self.below(100);
        if v >= 80 {
            // Mappings the driver must refuse.
            let (len, prot, flags, off, want) = match v {
                80..=84 => (WARPQ_RING_SIZE, RW, libc::MAP_PRIVATE, 0, libc::EINVAL),
                85..=87 => (
                    WARPQ_RING_SIZE + PAGE,
                    RD,
                    libc::MAP_SHARED,
                    0,
                    libc::EINVAL,
                ),
                88..=89 => (
                    WARPQ_RING_SIZE - PAGE,
                    RD,
                    libc::MAP_SHARED,
                    0,
                    libc::EINVAL,
                ),
                90..=94 => (
                    WARPQ_RING_SIZE,
                    RD,
                    libc::MAP_SHARED,
                    PAGE as i64,
                    libc::EINVAL,
                ),
                _ => (
                    WARPQ_RING_SIZE,
                    RD | libc::PROT_EXEC,
                    libc::MAP_SHARED,
                    0,
                    libc::EPERM,
                ),
            };
            // SAFETY: a mapping of our device that must fail; undone if not.
            let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
            if p != libc::MAP_FAILED {
                let _ = sys_munmap(p as u64, len);
                return Err(format!("mmap of the device (len {len:#x} prot {prot:#x} flags {flags:#x} offset {off:#x}) succeeded"));
            }
            let e = errno();
            let ok = e == want || (want == libc::EPERM && e == libc::EACCES);
            return if ok {
                Ok(())
            } else {
                Err(format!(
                    "refused mmap of the device: {}, expected {}",
                    ename(e),
                    ename(want)
                ))
            };
        }
        let Some(slot) = self.free_slot() else {
            return Ok(());
        };
        let prot = if rdonly && self.chance(50) {
            RW
        } else if rdonly || self.chance(10) {
            RD
        } else {
            RW
        };
        let addr = self.slot_addr(slot);
        // SAFETY: maps the device over our own reserved window slot.
        let p = unsafe {
            libc::mmap(
                addr as usize as *mut libc::c_void,
                WARPQ_RING_SIZE,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            let e = errno();
            reserve(addr, SLOT_BYTES)?;
            if rdonly && prot == RW && e == libc::EACCES {
                return Ok(());
            }
            return Err(format!("mmap of the ring (prot {prot:#x}): {}", ename(e)));
        }
        if rdonly && prot == RW {
            return Err("a read/write mmap of a read-only descriptor succeeded".into());
        }
        self.win_used[slot] = true;
        self.log(format!(
            "  file {}: ring at {addr:#x} prot {prot:#x}",
            self.files[fi].id
        ));
        self.files[fi].rings.push(RingMap {
            addr,
            slot,
            prot: [prot; RING_PAGES],
        });
        let h = Hdr(addr);
        self.check_header(fi, h)
    }

    fn pick_ring(&mut self) -> Option<(usize, usize)> {
        let all: Vec<(usize, usize)> = (0..self.files.len())
            .flat_map(|fi| (0..self.files[fi].rings.len()).map(move |ri| (fi, ri)))
            .collect();
        if all.is_empty() {
            None
        } else {
            Some(all[self.idx(all.len())])
        }
    }

    fn drop_ring_if_gone(&mut self, fi: usize, ri: usize) {
        if !self.files[fi].rings[ri].any_mapped() {
            let r = self.files[fi].rings.remove(ri);
            self.win_used[r.slot] = false;
            if !self.files[fi].alive() {
                self.release_file(fi);
            }
        }
    }

    /// A sub-range of the ring's pages: the whole mapping most of the time.
    fn ring_pages(&mut self) -> (usize, usize) {
        if self.chance(65) {
            (0, RING_PAGES)
        } else {
            let p0 = self.idx(RING_PAGES);
            (p0, 1 + self.idx(RING_PAGES - p0))
        }
    }

    /// munmap of a queue mapping: whole, or (refused: the driver's
    /// `may_split` says EINVAL) part of it.
    fn act_unmap_ring(&mut self) -> Res {
        let Some((fi, ri)) = self.pick_ring() else {
            return self.act_map_ring();
        };
        let (p0, n) = self.ring_pages();
        let a = self.files[fi].rings[ri].addr + (p0 * PAGE) as u64;
        let got = sys_munmap(a, n * PAGE);
        if n != RING_PAGES {
            if got != Err(libc::EINVAL) {
                return Err(format!(
                    "munmap of ring pages {p0}..{}: {}, expected EINVAL (queue mappings do not split)",
                    p0 + n,
                    show(got)
                ));
            }
            return self.check_ring(fi, ri);
        }
        got.map_err(|e| format!("munmap ring: {}", ename(e)))?;
        self.log(format!(
            "  file {}: unmapped ring at {a:#x}",
            self.files[fi].id
        ));
        reserve(a, n * PAGE)?;
        self.files[fi].rings[ri].prot.fill(GONE);
        self.drop_ring_if_gone(fi, ri);
        Ok(())
    }

    /// The header through mapping `ri`, if it is readable.
    fn check_ring(&mut self, fi: usize, ri: usize) -> Res {
        if self.files[fi].rings[ri].readable() {
            let h = Hdr(self.files[fi].rings[ri].addr);
            self.check_header(fi, h)?;
        }
        Ok(())
    }

    fn act_mprotect_ring(&mut self) -> Res {
        let Some((fi, ri)) = self.pick_ring() else {
            return self.act_map_ring();
        };
        let (p0, n) = self.ring_pages();
        let prot = [RD, NONE, RW, RW, RD | libc::PROT_EXEC][self.idx(5)];
        let cur = self.files[fi].rings[ri].prot[0];
        let want = if prot & libc::PROT_EXEC != 0 || (prot == RW && self.files[fi].rdonly) {
            Err(libc::EACCES)
        } else if n != RING_PAGES && prot != cur {
            Err(libc::EINVAL)
        } else {
            Ok(())
        };
        let a = self.files[fi].rings[ri].addr + (p0 * PAGE) as u64;
        let got = sys_mprotect(a, n * PAGE, prot);
        if got != want {
            return Err(format!(
                "mprotect ring pages {p0}..{} from {cur:#x} to {prot:#x}: {}, expected {}",
                p0 + n,
                show(got),
                show(want)
            ));
        }
        if got.is_ok() {
            self.files[fi].rings[ri].prot.fill(prot);
        }
        self.check_ring(fi, ri)
    }

    /// mremap of a queue mapping: the driver refuses moves (`->mremap`) and
    /// splits (a shrink), VM_DONTEXPAND refuses growth; the mapping must
    /// stay as it was.
    fn act_mremap_ring(&mut self) -> Res {
        let Some((fi, ri)) = self.pick_ring() else {
            return self.act_map_ring();
        };
        let r = self.files[fi].rings[ri].clone();
        let old = r.addr as usize as *mut libc::c_void;
        let (what, got, want, to) = match self.below(10) {
            0..=5 => {
                let Some(slot) = self.free_slot() else {
                    return Ok(());
                };
                let to = self.slot_addr(slot);
                // SAFETY: asks to move our ring mapping onto our own window
                // slot (refused; the slot is reserved again below).
                let p = unsafe {
                    libc::mremap(
                        old,
                        WARPQ_RING_SIZE,
                        WARPQ_RING_SIZE,
                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                        to as usize as *mut libc::c_void,
                    )
                };
                ("move", p, libc::EINVAL, Some(to))
            }
            6..=7 => {
                // SAFETY: asks to grow our ring mapping in place (refused).
                let p = unsafe { libc::mremap(old, WARPQ_RING_SIZE, WARPQ_RING_SIZE + PAGE, 0) };
                ("grow", p, libc::EFAULT, None)
            }
            _ => {
                let k = 1 + self.idx(RING_PAGES - 1);
                // SAFETY: asks to shrink our ring mapping in place (refused).
                let p = unsafe { libc::mremap(old, WARPQ_RING_SIZE, (RING_PAGES - k) * PAGE, 0) };
                ("shrink", p, libc::EINVAL, None)
            }
        };
        let e = errno();
        if let Some(to) = to {
            // MREMAP_FIXED unmaps the target first: keep the window reserved.
            if got != libc::MAP_FAILED {
                let _ = sys_munmap(to, WARPQ_RING_SIZE);
            }
            reserve(to, SLOT_BYTES)?;
        }
        if got != libc::MAP_FAILED {
            return Err(format!("mremap ({what}) of a queue mapping succeeded"));
        }
        if e != want {
            return Err(format!(
                "mremap ({what}) of a queue mapping: {}, expected {}",
                ename(e),
                ename(want)
            ));
        }
        self.check_ring(fi, ri)
    }

    fn act_dontneed_ring(&mut self) -> Res {
        let Some((fi, ri)) = self.pick_ring() else {
            return self.act_map_ring();
        };
        let r = self.files[fi].rings[ri].clone();
        for p in 0..RING_PAGES {
            if r.prot[p] != GONE {
                sys_madvise(r.addr + (p * PAGE) as u64, PAGE, libc::MADV_DONTNEED)
                    .map_err(|e| format!("madvise(DONTNEED) ring page {p}: {}", ename(e)))?;
            }
        }
        if r.readable() {
            self.check_header(fi, Hdr(r.addr))?;
        }
        Ok(())
    }

    // ---- the ioctls ----------------------------------------------------------

    fn act_info(&mut self) -> Res {
        let Some((_, fd)) = self.pick_fd_file() else {
            return self.act_open();
        };
        let place = self.place();
        let mut b = InfoBuf::default();
        b.i.size = self.size_field(INFO_V1);
        let declared = b.i.size as usize;
        let size_ok = declared >= INFO_V1;
        let cmd = self.cmd_bits(WARPQ_IOC_INFO);
        let got = self.call(fd, cmd, &mut b, place)?;
        let v = b.i;
        Self::check(
            "INFO",
            E_INFO,
            got,
            &Self::arg_expect(place, size_ok, true, Expect::Ok),
        )?;
        if got.is_ok() && place == Place::Normal {
            let want_caps = WARPQ_CAP_RING | WARPQ_CAP_SUBMIT_IOCTL | WARPQ_CAP_FORK_QUEUE;
            let written = v.size as usize;
            if written < INFO_V1 || written > declared.min(self.cfg.info_size) {
                return Err(format!(
                    "INFO of {declared} bytes says it wrote {written} (the kernel's is {})",
                    self.cfg.info_size
                ));
            }
            if as_bytes(&b)[written.max(std::mem::size_of::<warpq_info>())..]
                .iter()
                .any(|&x| x != 0)
            {
                return Err(format!(
                    "INFO wrote past the {written} bytes it says it wrote"
                ));
            }
            if v.version != WARPQ_UAPI_VERSION
                || v.capabilities & want_caps != want_caps
                || v.sq_entries != WARPQ_SQ_ENTRIES
                || v.cq_entries != WARPQ_CQ_ENTRIES
                || v.ring_size as usize != WARPQ_RING_SIZE
                || v.max_regions as usize != self.cfg.max_regions
                || v.max_region_bytes != self.cfg.max_region_bytes
                || v.policy > 1
                || v.dma_translation > 4
            {
                return Err(format!("INFO returned {v:?}"));
            }
        }
        Ok(())
    }

    fn act_stats(&mut self) -> Res {
        let Some((fi, fd)) = self.pick_fd_file() else {
            return self.act_open();
        };
        let place = self.place();
        let mut b = StatsBuf::default();
        b.s.size = self.size_field(STATS_V1);
        let declared = b.s.size as usize;
        let size_ok = declared >= STATS_V1;
        let cmd = self.cmd_bits(WARPQ_IOC_STATS);
        let got = self.call(fd, cmd, &mut b, place)?;
        let v = b.s;
        Self::check(
            "STATS",
            E_STATS,
            got,
            &Self::arg_expect(place, size_ok, true, Expect::Ok),
        )?;
        if got.is_err() || place != Place::Normal {
            return Ok(());
        }
        let id = self.files[fi].id;
        let written = v.size as usize;
        if written < STATS_V1 || written > declared.min(self.cfg.stats_size) {
            return Err(format!(
                "STATS of {declared} bytes says it wrote {written} (the kernel's is {})",
                self.cfg.stats_size
            ));
        }
        if as_bytes(&b)[written..].iter().any(|&x| x != 0) {
            return Err(format!(
                "STATS wrote past the {written} bytes it says it wrote"
            ));
        }
        if v.pages_pinned > v.pages_pinned_peak {
            return Err(format!(
                "file {id}: STATS pages_pinned {} > peak {}",
                v.pages_pinned, v.pages_pinned_peak
            ));
        }
        let f = &self.files[fi];
        let pages: u64 = f.regs.iter().map(|r| r.len / PAGE64).sum();
        if v.pages_pinned > pages {
            return Err(format!(
                "file {id}: STATS pages_pinned {} with {pages} pages registered",
                v.pages_pinned
            ));
        }
        // Exact only when nothing can complete: a sane, empty queue whose
        // kernel-owned indices the fuzzer never overwrote.
        if let (false, true, true, Some(h)) =
            (f.garbage, f.honest, f.fifo.is_empty(), f.read_ring())
        {
            let total: u64 = v.commands_by_status.iter().sum();
            let failed: u64 = v.commands_by_status[1..].iter().sum();
            let ct = u64::from(h.load(H_CQ_TAIL));
            let invalid = h.sq_invalid();
            if total != ct
                || v.commands_ok != v.commands_by_status[0]
                || v.commands_failed != failed
                || invalid != v.commands_by_status[WARPQ_STATUS_INVALID as usize]
            {
                return Err(format!(
                    "file {id}: STATS ok {} failed {} by status {:?} on a queue that posted {ct} completions, {invalid} INVALID by the ring header",
                    v.commands_ok, v.commands_failed, v.commands_by_status
                ));
            }
        }
        Ok(())
    }

    fn act_wait(&mut self) -> Res {
        let Some((fi, fd)) = self.pick_fd_file() else {
            return self.act_open();
        };
        let place = self.place();
        let min_ready = match self.below(10) {
            0..=1 => 0,
            2..=6 => 1,
            7..=8 => self.below(600) as u32,
            _ => u32::MAX,
        };
        let timeout_ns: i64 = match self.below(10) {
            0..=1 => 0,
            2..=8 => (1 + self.below(30)) as i64 * 1_000_000,
            _ if min_ready == 0 => [-1, i64::MAX][self.idx(2)],
            _ => 5_000_000,
        };
        let mut v = warpq_wait {
            size: self.size_field(24),
            min_ready,
            timeout_ns,
            ..Default::default()
        };
        let size_ok = v.size >= 24;
        let ring = self.files[fi]
            .read_ring()
            .filter(|_| !self.files[fi].garbage);
        let before = ring.map(|h| {
            h.load(H_CQ_TAIL)
                .wrapping_sub(h.load(H_CQ_HEAD))
                .min(WARPQ_CQ_ENTRIES)
        });
        let cmd = self.cmd_bits(WARPQ_IOC_WAIT);
        let t0 = Instant::now();
        let got = self.call(fd, cmd, &mut v, place)?;
        let took = t0.elapsed();
        Self::check(
            "WAIT",
            E_WAIT,
            got,
            &Self::arg_expect(place, size_ok, true, Expect::Ok),
        )?;
        let limit = Duration::from_nanos(timeout_ns.clamp(0, 1_000_000_000) as u64)
            + Duration::from_secs(3);
        if ((0..1_000_000_000).contains(&timeout_ns) || min_ready == 0) && took > limit {
            return Err(format!(
                "WAIT(min_ready {min_ready}, timeout {timeout_ns} ns) took {took:?}"
            ));
        }
        if got.is_ok() && place == Place::Normal {
            if v.ready > WARPQ_CQ_ENTRIES {
                return Err(format!("WAIT ready {}", v.ready));
            }
            if let (Some(h), Some(b)) = (ring, before) {
                if !self.files[fi].garbage {
                    let after = h
                        .load(H_CQ_TAIL)
                        .wrapping_sub(h.load(H_CQ_HEAD))
                        .min(WARPQ_CQ_ENTRIES);
                    if v.ready < b || v.ready > after {
                        return Err(format!(
                            "WAIT said {} ready; the ring had {b} before and {after} after",
                            v.ready
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn act_wake(&mut self) -> Res {
        let Some((_, fd)) = self.pick_fd_file() else {
            return self.act_open();
        };
        let place = self.place();
        let mut v = warpq_wake {
            size: self.size_field(8),
            rsvd: 0,
        };
        let size_ok = v.size >= 8;
        let cmd = self.cmd_bits(WARPQ_IOC_WAKE);
        let got = self.call(fd, cmd, &mut v, place)?;
        Self::check(
            "WAKE",
            E_WAKE,
            got,
            &Self::arg_expect(place, size_ok, false, Expect::Ok),
        )
    }

    fn wake(&mut self, fd: i32) -> Res {
        let mut v = warpq_wake { size: 8, rsvd: 0 };
        let got = self.call(fd, WARPQ_IOC_WAKE, &mut v, Place::Normal)?;
        Self::check("WAKE", E_WAKE, got, &Expect::Ok)
    }

    fn act_unknown_ioctl(&mut self) -> Res {
        let Some((_, fd)) = self.pick_fd_file() else {
            return self.act_open();
        };
        let magic = WARPQ_IOC_MAGIC as libc::c_ulong;
        let size = self.below(0x4000) as libc::c_ulong;
        let cmd: libc::c_ulong = match self.below(5) {
            // Our type, numbers past the last ioctl.
            0 | 1 => {
                (3 << 30) | (size << 16) | (magic << 8) | (7 + self.below(249)) as libc::c_ulong
            }
            // Our numbers with another direction.
            2 => {
                ((self.below(3) as libc::c_ulong) << 30)
                    | (size << 16)
                    | (magic << 8)
                    | self.below(7) as libc::c_ulong
            }
            // Neighbouring types no VFS ioctl uses.
            3 => (3 << 30) | (size << 16) | ((magic + 1) << 8) | self.below(256) as libc::c_ulong,
            // A terminal ioctl.
            _ => libc::TCGETS as libc::c_ulong,
        };
        // A valid buffer so that only the number matters.
        let mut junk = StatsBuf::default();
        junk.s.size = std::mem::size_of::<StatsBuf>() as u32;
        let got = self.call(fd, cmd, &mut junk, Place::Normal)?;
        Self::check(
            &format!("ioctl {cmd:#x}"),
            E_UNKNOWN,
            got,
            &Expect::Err(libc::ENOTTY),
        )
    }

    fn act_register(&mut self) -> Res {
        let Some((fi, fd)) = self.pick_fd_file() else {
            return self.act_open();
        };
        let Some(bi) = self.pick_buf() else {
            return self.act_new_buf();
        };
        let (ba, bl) = (self.bufs[bi].addr, self.bufs[bi].len as u64);
        let bp = self.bufs[bi].pages() as u64;
        let (addr, len): (u64, u64) = match self.below(100) {
            0..=54 => (ba, bl),
            55..=69 => {
                let p0 = self.below(bp);
                (ba + p0 * PAGE64, (1 + self.below(bp - p0)) * PAGE64)
            }
            70..=74 => (ba, bl + PAGE64),
            75..=77 => (ba + 1 + self.below(PAGE64 - 1), bl),
            78..=79 => (ba, bl - 1 - self.below(PAGE64 - 1)),
            80..=81 => (ba, 0),
            82..=83 => (u64::MAX - PAGE64 + 1, 2 * PAGE64),
            84..=86 => (ba, self.cfg.max_region_bytes + PAGE64),
            87..=90 if !self.tombs.is_empty() => {
                let ti = self.idx(self.tombs.len());
                self.tombs[ti]
            }
            87..=93 => [(0, PAGE64), (KERNEL_ADDR, PAGE64), (1 << 47, 4 * PAGE64)][self.idx(3)],
            _ => match self.pick_ring() {
                Some((fj, rj)) => (self.files[fj].rings[rj].addr, RING64),
                None => (ba, bl),
            },
        };
        let access = match self.below(100) {
            0..=59 => WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE,
            60..=74 => WARPQ_ACCESS_READ,
            75..=89 => WARPQ_ACCESS_WRITE,
            _ => [0, 4, 7, 8, u32::MAX][self.idx(5)],
        };
        let transient = vec![libc::EBUSY, libc::EAGAIN];
        let f = &self.files[fi];
        let mut clean = false;
        let sem = if addr % PAGE64 != 0
            || len % PAGE64 != 0
            || len == 0
            || addr.checked_add(len).is_none()
        {
            Expect::Err(libc::EINVAL)
        } else if len > self.cfg.max_region_bytes {
            Expect::Err(libc::E2BIG)
        } else if access & !(WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) != 0 || access == 0 {
            Expect::Err(libc::EINVAL)
        } else if f.regs.len() >= self.cfg.max_regions {
            Expect::Err(libc::ENOSPC)
        } else if f.regs.iter().any(|r| overlaps(r.addr, r.len, addr, len)) {
            Expect::Err(libc::EEXIST)
        } else {
            let (good, one_buf) = self.pinnable(addr, len, access);
            match good {
                Some(true) => {
                    clean = one_buf;
                    Expect::OkOr(transient)
                }
                Some(false) => {
                    Expect::ErrIn(vec![libc::EFAULT, libc::ENOMEM, libc::EBUSY, libc::EAGAIN])
                }
                None => Expect::Any,
            }
        };
        let place = self.place();
        let mut v = warpq_register {
            size: self.size_field(32),
            access,
            addr,
            len,
            handle: 0,
        };
        let size_ok = v.size >= 32;
        let exp = Self::arg_expect(place, size_ok, true, sem.clone());
        let cmd = self.cmd_bits(WARPQ_IOC_REGISTER);
        let got = self.call(fd, cmd, &mut v, place)?;
        let what = format!("REGISTER {addr:#x}+{len:#x} access {access:#x}");
        self.log(format!(
            "  file {} {what} size {} place {} -> {} (expected {}){}",
            self.files[fi].id,
            v.size,
            place as u8,
            show(got),
            exp.show(),
            if got.is_ok() {
                format!(" handle {:#x} clean {clean}", v.handle)
            } else {
                String::new()
            }
        ));
        Self::check(&what, E_REGISTER, got, &exp)?;
        if got.is_err() {
            // A REGISTER that fails after inserting its region (pinning
            // failed, say) leaves it in the table for a moment: a queued
            // command over it may complete FAULT_UNMAPPED meanwhile.
            self.taint(addr, len, Taint::Status, Some(fi));
            return Ok(());
        }
        let handle = {
            let h = v.handle;
            let slot = h & 0xffff;
            let generation = h >> 16;
            if slot >= 16 || generation == 0 || generation > u64::from(u32::MAX) {
                return Err(format!("{what}: handle {h:#x} is not a handle"));
            }
            if self.files[fi].regs.iter().any(|r| r.handle == h) {
                return Err(format!("{what}: handle {h:#x} is already live"));
            }
            h
        };
        let dst_ok = self.owned(addr, len);
        let write = access & WARPQ_ACCESS_WRITE != 0;
        self.taint(addr, len, Taint::Status, Some(fi));
        self.files[fi].regs.push(Reg {
            handle,
            addr,
            len,
            access,
            clean,
            dst_ok,
        });
        if write && self.files[fi].garbage {
            self.mark_unknown(addr, len);
        }
        Ok(())
    }

    /// Whether GUP can pin `[a, a + l)` for `access`: `Some(true)` if every
    /// page is in a buffer mapped with enough protection (and whether it is
    /// one read/write buffer: a clean registration), `Some(false)` if some
    /// page surely cannot be pinned, `None` if unknown.
    fn pinnable(&self, a: u64, l: u64, access: u32) -> (Option<bool>, bool) {
        if self.in_window(a, l) {
            // Queue mappings are refused; the rest of the window is PROT_NONE.
            return (Some(false), false);
        }
        if !(PAGE64..1 << 47).contains(&a) {
            return (Some(false), false);
        }
        let need = if access & WARPQ_ACCESS_WRITE != 0 {
            libc::PROT_WRITE
        } else {
            0
        } | if access & WARPQ_ACCESS_READ != 0 {
            RD
        } else {
            0
        };
        let mut all = true;
        let mut p = a;
        while p < a + l {
            match self.bufs.iter().find(|b| p >= b.addr && p < b.end()) {
                Some(b) => {
                    let pr = b.prot[((p - b.addr) / PAGE64) as usize];
                    if pr == GONE || pr & need != need || pr == NONE {
                        return (Some(false), false);
                    }
                }
                None if self.in_tomb(p, PAGE64) => return (Some(false), false),
                None => all = false,
            }
            p += PAGE64;
        }
        if !all {
            return (None, false);
        }
        let one = self.buf_containing(a, l).is_some_and(|bi| {
            let b = &self.bufs[bi];
            let p0 = ((a - b.addr) / PAGE64) as usize;
            b.prot[p0..p0 + (l / PAGE64) as usize]
                .iter()
                .all(|&x| x == RW)
        });
        (Some(true), one)
    }

    /// Every page of `[a, a + l)` is a buffer or a tombstone: memory nothing
    /// but this program's buffers will ever occupy.
    fn owned(&self, a: u64, l: u64) -> bool {
        let mut p = a;
        while p < a.saturating_add(l) {
            let b = self.bufs.iter().any(|b| p >= b.addr && p < b.end());
            if !b && !self.in_tomb(p, 1) {
                return false;
            }
            p += PAGE64;
        }
        l > 0
    }

    fn act_unregister(&mut self) -> Res {
        let Some((fi, fd)) = self.pick_fd_file() else {
            return self.act_open();
        };
        let f = &self.files[fi];
        let live = f.regs.len();
        let v = self.below(100);
        let handle = if v < 70 && live > 0 {
            let i = self.idx(live);
            self.files[fi].regs[i].handle
        } else if v < 82 && !self.files[fi].dead_handles.is_empty() {
            let i = self.idx(self.files[fi].dead_handles.len());
            self.files[fi].dead_handles[i]
        } else if v < 90 && !self.files[fi].foreign_handles.is_empty() {
            let i = self.idx(self.files[fi].foreign_handles.len());
            self.files[fi].foreign_handles[i]
        } else {
            let guess = (1 << 16) | self.below(16);
            let g = [
                0,
                0xffff,
                (1 << 16) | 20,
                u64::MAX,
                1 << 48,
                guess,
                self.rng.next_u64() | (1 << 40),
            ];
            g[self.idx(g.len())]
        };
        // A stale or foreign handle may name a live region of this queue
        // (a child's first handles equal its parent's).
        let which = self.files[fi].regs.iter().position(|r| r.handle == handle);
        let sem = if which.is_some() {
            Expect::OkOr(vec![libc::EBUSY])
        } else {
            Expect::ErrIn(vec![libc::ENOENT, libc::EINVAL])
        };
        let place = self.place();
        let mut u = warpq_unregister {
            size: self.size_field(16),
            rsvd: 0,
            handle,
        };
        let size_ok = u.size >= 16;
        let exp = Self::arg_expect(place, size_ok, false, sem);
        let cmd = self.cmd_bits(WARPQ_IOC_UNREGISTER);
        let got = self.call(fd, cmd, &mut u, place)?;
        self.log(format!(
            "  file {} UNREGISTER {handle:#x} -> {}",
            self.files[fi].id,
            show(got)
        ));
        Self::check(&format!("UNREGISTER {handle:#x}"), E_UNREGISTER, got, &exp)?;
        if got.is_ok() {
            let Some(i) = which else {
                return Err(format!("UNREGISTER of handle {handle:#x}, which names no region of this queue, succeeded"));
            };
            let r = self.files[fi].regs.remove(i);
            self.files[fi].dead_handles.push(handle);
            self.taint(r.addr, r.len, Taint::Status, Some(fi));
        }
        Ok(())
    }

    fn act_submit_ioctl(&mut self) -> Res {
        let Some((fi, fd)) = self.pick_fd_file() else {
            return self.act_open();
        };
        let k = match self.below(10) {
            0 => 0,
            1..=7 => 1 + self.idx(8),
            _ => 1 + self.idx(40),
        };
        let sqes: Vec<warpq_sqe> = (0..k).map(|_| self.gen_sqe(fi)).collect();
        for s in &sqes {
            self.files[fi].known.insert(s.user_data);
        }
        // Where the entries are: our heap, or the end of the read-only
        // scratch page with `count` running into the PROT_NONE page.
        // `short`: None, an array of `count` entries; Some(false), `k`
        // entries and then unreadable memory; Some(true), nothing readable.
        let (ptr, count, short) = match self.below(100) {
            0..=84 => (sqes.as_ptr() as u64, k as u32, None),
            85..=92 if k > 0 && k * 64 <= PAGE => {
                let page1 = self.window + PAGE64;
                let off = PAGE - k * 64;
                sys_mprotect(page1, PAGE, RW).map_err(|e| format!("scratch: {}", ename(e)))?;
                let bytes: Vec<u8> = sqes.iter().flat_map(|s| as_bytes(s).to_vec()).collect();
                // SAFETY: scratch page 1 is read/write right now.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        (page1 as usize + off) as *mut u8,
                        bytes.len(),
                    )
                };
                sys_mprotect(page1, PAGE, RD).map_err(|e| format!("scratch: {}", ename(e)))?;
                (
                    page1 + off as u64,
                    (k + 1 + self.idx(64)) as u32,
                    Some(false),
                )
            }
            85..=96 if k == 0 => (0, 0, None),
            85..=96 => (0, 1 + self.below(64) as u32, Some(true)),
            _ => (KERNEL_ADDR, 1 + self.below(4) as u32, Some(true)),
        };
        let place = self.place();
        let mut v = warpq_submit {
            size: self.size_field(24),
            count,
            sqes: ptr,
            submitted: 0,
            rsvd: 0,
        };
        let size_ok = v.size >= 24;
        // Like write(2): the entries before an unreadable one are queued and
        // counted; EFAULT only when none went in (a full ring, say).
        let sem = match short {
            None => Expect::Ok,
            Some(false) => Expect::OkOr(vec![libc::EFAULT]),
            Some(true) => Expect::Err(libc::EFAULT),
        };
        let exp = Self::arg_expect(place, size_ok, true, sem);
        let ring = self.files[fi].read_ring();
        let t0 = ring.map(|h| h.load(H_SQ_TAIL));
        let head = ring.map(|h| h.load(H_SQ_HEAD));
        let cmd = self.cmd_bits(WARPQ_IOC_SUBMIT);
        let got = self.call(fd, cmd, &mut v, place)?;
        self.log(format!(
            "  file {}: SUBMIT {k} entries count {count} at {ptr:#x} -> {} submitted {}",
            self.files[fi].id,
            show(got),
            v.submitted
        ));
        Self::check(&format!("SUBMIT of {count} entries"), E_SUBMIT, got, &exp)?;
        let pushed = match (ring, t0) {
            (Some(h), Some(t0)) => Some(h.load(H_SQ_TAIL).wrapping_sub(t0)),
            _ if got.is_ok() && place == Place::Normal => Some(v.submitted),
            _ => None,
        };
        if got.is_err() && pushed.is_some_and(|p| p != 0) {
            return Err(format!(
                "SUBMIT failed with {} but the tail moved by {}",
                show(got),
                pushed.unwrap_or(0)
            ));
        }
        if let (Ok(()), Place::Normal) = (got, place) {
            let readable = if short.is_some() { k as u32 } else { count };
            if v.submitted > readable {
                return Err(format!(
                    "SUBMIT queued {} entries of {count} with {readable} readable",
                    v.submitted
                ));
            }
            if let (Some(p), false, Some(t0), Some(h0)) = (pushed, self.files[fi].garbage, t0, head)
            {
                if p != v.submitted {
                    return Err(format!(
                        "SUBMIT said {} queued, the tail moved by {p}",
                        v.submitted
                    ));
                }
                let room = WARPQ_SQ_ENTRIES - t0.wrapping_sub(h0).min(WARPQ_SQ_ENTRIES);
                if v.submitted < readable.min(room) {
                    return Err(format!(
                        "SUBMIT queued {} of {readable} readable entries with {room} free slots",
                        v.submitted
                    ));
                }
            }
        }
        if self.files[fi].garbage {
            self.n.commands += u64::from(pushed.unwrap_or(0).min(k as u32));
            return Ok(());
        }
        match pushed {
            Some(p) if p as usize <= k => {
                for s in sqes.into_iter().take(p as usize) {
                    self.outstanding(fi, s);
                }
                let t = self.files[fi].tail.map(|t| t.wrapping_add(p));
                self.files[fi].tail = t;
                Ok(())
            }
            Some(p) => Err(format!("SUBMIT of {k} entries moved the tail by {p}")),
            None => {
                // No readable ring and no answer: how many went in is unknown.
                self.enter_garbage(fi);
                Ok(())
            }
        }
    }

    // ---- the ring ------------------------------------------------------------

    fn act_ring_submit(&mut self) -> Res {
        let Some(fi) = self.pick_file() else {
            return self.act_open();
        };
        let (Some(r), Some(w)) = (self.files[fi].read_ring(), self.files[fi].write_ring()) else {
            return self.act_map_ring();
        };
        let k = if self.chance(80) {
            1 + self.idx(8)
        } else {
            1 + self.idx(64)
        };
        if self.files[fi].garbage {
            if self.chance(50) {
                return self.resync(fi);
            }
            // Keep the chaos going: entries anywhere, a tail anywhere near.
            let start = self.rng.next_u64() as u32;
            for i in 0..k {
                let s = self.gen_sqe(fi);
                self.files[fi].known.insert(s.user_data);
                w.write_sqe(start.wrapping_add(i as u32), &s);
            }
            let head = r.load(H_SQ_HEAD);
            let t = head.wrapping_add(self.below(u64::from(WARPQ_SQ_ENTRIES) + 1) as u32);
            w.store(H_SQ_TAIL, t);
            self.log(format!(
                "  file {}: chaos: {k} entries at {start}, tail {t}",
                self.files[fi].id
            ));
            self.n.commands += k as u64;
            return Ok(());
        }
        let head = r.load(H_SQ_HEAD);
        let tail = self.files[fi].tail.unwrap_or_else(|| r.load(H_SQ_TAIL));
        let room = (WARPQ_SQ_ENTRIES - tail.wrapping_sub(head).min(WARPQ_SQ_ENTRIES)) as usize;
        // All `k` are generated whatever the room (which depends on the
        // engine's progress): the random sequence must not.
        let sqes: Vec<warpq_sqe> = (0..k).map(|_| self.gen_sqe(fi)).collect();
        let k = k.min(room);
        for (i, s) in sqes.into_iter().take(k).enumerate() {
            self.files[fi].known.insert(s.user_data);
            w.write_sqe(tail.wrapping_add(i as u32), &s);
            self.outstanding(fi, s);
        }
        let t = tail.wrapping_add(k as u32);
        w.store(H_SQ_TAIL, t);
        self.files[fi].tail = Some(t);
        self.log(format!(
            "  file {}: {k} entries, tail {t} (head {head})",
            self.files[fi].id
        ));
        fence(Ordering::SeqCst);
        let wake = self.chance(90);
        if r.load(H_FLAGS) & WARPQ_RING_NEED_WAKEUP != 0 && wake {
            if let Some(fd) = self.fd_of(fi) {
                self.wake(fd)?;
            }
        }
        Ok(())
    }

    fn act_garbage_tail(&mut self) -> Res {
        let Some(fi) = self.pick_file() else {
            return self.act_open();
        };
        let (Some(r), Some(w)) = (self.files[fi].read_ring(), self.files[fi].write_ring()) else {
            return Ok(());
        };
        let head = r.load(H_SQ_HEAD);
        let t = match self.below(4) {
            0 => head.wrapping_add(WARPQ_SQ_ENTRIES + 1 + self.below(1 << 20) as u32),
            1 => head.wrapping_sub(1 + self.below(1000) as u32),
            2 => head.wrapping_add(self.below(u64::from(WARPQ_SQ_ENTRIES) + 1) as u32),
            _ => self.rng.next_u64() as u32,
        };
        self.enter_garbage(fi);
        self.log(format!(
            "  file {}: tail {t} (head {head})",
            self.files[fi].id
        ));
        w.store(H_SQ_TAIL, t);
        Ok(())
    }

    fn act_corrupt_header(&mut self) -> Res {
        let Some(fi) = self.pick_file() else {
            return self.act_open();
        };
        let (Some(r), Some(w)) = (self.files[fi].read_ring(), self.files[fi].write_ring()) else {
            return Ok(());
        };
        let field = [H_CQ_HEAD, H_CQ_HEAD, H_SQ_HEAD, H_CQ_TAIL, H_FLAGS][self.idx(5)];
        let old = r.load(field);
        let v = match self.below(3) {
            0 => old.wrapping_add(1 + self.below(600) as u32),
            1 => old.wrapping_sub(1 + self.below(600) as u32),
            _ => self.rng.next_u64() as u32,
        };
        self.enter_garbage(fi);
        if field != H_CQ_HEAD {
            self.files[fi].honest = false;
        }
        self.log(format!(
            "  file {}: header field {field} from {old} to {v}",
            self.files[fi].id
        ));
        w.store(field, v);
        Ok(())
    }

    /// Brings a garbage ring back to a state the fuzzer knows: parks the
    /// tail out of reach, waits for the engine to go idle, then sets the
    /// tail to the head and consumes every completion.
    fn resync(&mut self, fi: usize) -> Res {
        if !self.files[fi].garbage {
            return self.drain(fi);
        }
        if self.files[fi].write_ring().is_none() || self.files[fi].read_ring().is_none() {
            return Ok(());
        }
        // Without a descriptor nothing can wake a sleeping engine.
        let Some(fd) = self.fd_of(fi) else {
            return Ok(());
        };
        let (Some(r), Some(w)) = (self.files[fi].read_ring(), self.files[fi].write_ring()) else {
            return Ok(());
        };
        let id = self.files[fi].id;
        // Park the tail out of reach: the engine takes nothing new, and
        // finishes at most the command it already took.
        let head = r.load(H_SQ_HEAD);
        w.store(H_SQ_TAIL, head.wrapping_add(0x8000_0000));
        fence(Ordering::SeqCst);
        // Then a NOP sentinel right at the head: the engine completes in
        // order, so once the sentinel completes nothing else is in flight.
        // (A command in flight may consume the sentinel's index first: then
        // the sentinel goes at the next head.)
        let sentinel = self.new_ud();
        self.files[fi].known.insert(sentinel);
        let nop = warpq_sqe {
            opcode: WARPQ_OP_NOP,
            user_data: sentinel,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut placed_at: Option<u32> = None;
        let mut seen = false;
        while !seen {
            let ch = r.load(H_CQ_HEAD);
            let ct = r.load(H_CQ_TAIL);
            let n = ct.wrapping_sub(ch);
            if n <= WARPQ_CQ_ENTRIES {
                for i in 0..n {
                    let c = r.read_cqe(ch.wrapping_add(i));
                    seen |= c.user_data == sentinel;
                    self.completion(fi, &c)?;
                }
            }
            w.store(H_CQ_HEAD, ct);
            if seen {
                break;
            }
            let h = r.load(H_SQ_HEAD);
            if placed_at != Some(h) {
                w.write_sqe(h, &nop);
                w.store(H_SQ_TAIL, h.wrapping_add(1));
                fence(Ordering::SeqCst);
                placed_at = Some(h);
                self.wake(fd)?;
            }
            if t0.elapsed() > DRAIN_LIMIT {
                return Err(format!(
                    "file {id}: a NOP published alone after parking the tail did not complete within {DRAIN_LIMIT:?} \
                     (sq_head {} sq_tail {} cq_head {} cq_tail {} flags {:#x})",
                    r.load(H_SQ_HEAD),
                    r.load(H_SQ_TAIL),
                    r.load(H_CQ_HEAD),
                    r.load(H_CQ_TAIL),
                    r.load(H_FLAGS)
                ));
            }
            if t0.elapsed() > Duration::from_millis(50) {
                self.wake(fd)?;
                std::thread::sleep(Duration::from_millis(2));
            } else {
                std::thread::yield_now();
            }
        }
        let ct = r.load(H_CQ_TAIL);
        let head = r.load(H_SQ_HEAD);
        let tail = r.load(H_SQ_TAIL);
        if tail != head {
            return Err(format!(
                "file {id}: after the sentinel completed, sq_head {head} differs from sq_tail {tail}"
            ));
        }
        self.log(format!(
            "  file {}: resynchronised at head {head}, cq_tail {ct}",
            self.files[fi].id
        ));
        self.n.resyncs += 1;
        let f = &mut self.files[fi];
        f.garbage = false;
        f.tail = Some(head);
        f.c_off = Some(ct.wrapping_sub(head));
        Ok(())
    }

    /// Waits (bounded) until every outstanding command of file `fi` completed.
    fn drain(&mut self, fi: usize) -> Res {
        if self.files[fi].garbage {
            return self.resync(fi);
        }
        if self.files[fi].fifo.is_empty() {
            return Ok(());
        }
        let Some(fd) = self.fd_of(fi) else {
            return Ok(());
        };
        if self.files[fi].read_ring().is_none() || self.files[fi].write_ring().is_none() {
            return Ok(());
        }
        self.wake(fd)?;
        let t0 = Instant::now();
        let mut last = self.files[fi].fifo.len();
        let mut progress = Instant::now();
        while !self.files[fi].fifo.is_empty() {
            self.reap(fi)?;
            if self.files[fi].fifo.is_empty() {
                break;
            }
            if self.files[fi].fifo.len() != last {
                last = self.files[fi].fifo.len();
                progress = Instant::now();
            }
            if progress.elapsed() > DRAIN_LIMIT || t0.elapsed() > 3 * DRAIN_LIMIT {
                let f = &self.files[fi];
                let h = f.read_ring().map(|h| {
                    (
                        h.load(H_SQ_HEAD),
                        h.load(H_SQ_TAIL),
                        h.load(H_CQ_TAIL),
                        h.load(H_FLAGS),
                    )
                });
                return Err(format!(
                    "file {}: {} commands never completed (first {:#x}); sq_head/sq_tail/cq_tail/flags {h:?}",
                    f.id,
                    f.fifo.len(),
                    f.fifo[0].s.user_data
                ));
            }
            let mut v = warpq_wait {
                size: 24,
                min_ready: 1,
                timeout_ns: 20_000_000,
                ..Default::default()
            };
            let got = self.call(fd, WARPQ_IOC_WAIT, &mut v, Place::Normal)?;
            Self::check("WAIT", E_WAIT, got, &Expect::Ok)?;
            if v.ready == 0 {
                self.wake(fd)?;
            }
        }
        Ok(())
    }

    // ---- processes -----------------------------------------------------------

    fn act_fork(&mut self) -> Res {
        if self.child {
            return Ok(());
        }
        let child_seed = self.rng.next_u64();
        let steps = 3 + self.below(28);
        if self.children.len() >= MAX_CHILDREN {
            return Ok(());
        }
        let _ = std::io::stdout().flush();
        // SAFETY: the fuzzer's own thread is the only one that touches its
        // state; the watchdog thread does not survive in the child, which
        // only uses its own copies of everything.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", ename(errno())));
        }
        if pid == 0 {
            IN_CHILD.store(true, Ordering::SeqCst);
            let code = match self
                .become_child(child_seed)
                .and_then(|()| self.child_main(steps))
            {
                Ok(()) => 0,
                Err(e) => {
                    println!(
                        "fuzz: seed {:#018x} child (pid {}) step {} ({}) FAILED: {e}\n  the child's last steps:{}",
                        self.seed,
                        std::process::id(),
                        self.step,
                        NAMES[CUR_ACT.load(Ordering::Relaxed) as usize],
                        self.history_text()
                    );
                    1
                }
            };
            let _ = std::io::stdout().flush();
            // SAFETY: leave the child without running the parent's exit path.
            unsafe { libc::_exit(code) };
        }
        self.n.forks += 1;
        self.log(format!("  child {pid}"));
        self.children.push(Child {
            pid,
            started: Instant::now(),
        });
        for f in &mut self.files {
            f.inherited = true;
        }
        for b in &mut self.bufs {
            if b.shared {
                b.known.fill(false);
            }
        }
        Ok(())
    }

    /// Turns the parent's state into the child's: same files, mappings and
    /// buffers (private ones are copies), no registrations, fresh queues.
    fn become_child(&mut self, seed: u64) -> Res {
        let quiet: Vec<bool> = self
            .bufs
            .iter()
            .map(|b| self.quiet(b.addr, b.len as u64))
            .collect();
        for (b, q) in self.bufs.iter_mut().zip(quiet) {
            if b.shared || !q {
                b.known.fill(false);
            }
        }
        self.child = true;
        self.history.clear();
        self.children.clear();
        self.zombies.clear();
        self.rng = Rng(splitmix(seed) | 1);
        self.tag = 0x8000_0000 | self.rng.below(0x7fff_ffff);
        self.next_ud = 1;
        for f in &mut self.files {
            f.foreign_handles = f
                .regs
                .iter()
                .map(|r| r.handle)
                .chain(f.dead_handles.drain(..))
                .collect();
            f.regs.clear();
            f.known.clear();
            f.fifo.clear();
            f.garbage = false;
            f.c_off = Some(0);
            f.tail = Some(0);
            f.honest = true;
            f.parent_owner = f.owner.take();
            f.inherited = false;
        }
        // The first touch of an inherited ring must show a fresh queue.
        for fi in 0..self.files.len() {
            if let Some(h) = self.files[fi].read_ring() {
                let id = self.files[fi].id;
                let (sh, st, ch, ct) = (
                    h.load(H_SQ_HEAD),
                    h.load(H_SQ_TAIL),
                    h.load(H_CQ_HEAD),
                    h.load(H_CQ_TAIL),
                );
                if (sh, st, ch, ct) != (0, 0, 0, 0) {
                    return Err(format!("file {id}: the child's first look at the ring shows indices {sh}/{st}/{ch}/{ct}, not a fresh queue"));
                }
                self.check_header(fi, h)?;
            }
        }
        Ok(())
    }

    fn child_main(&mut self, steps: u64) -> Res {
        for s in 0..steps {
            self.step = s;
            let a = self.pick_action();
            CUR_STEP.store(s, Ordering::Relaxed);
            CUR_ACT.store(a as u32, Ordering::Relaxed);
            self.act(a)?;
            self.after_step()?;
        }
        CUR_ACT.store(Act::Cleanup as u32, Ordering::Relaxed);
        if self.chance(50) {
            self.child_exit(false)
        } else {
            for fi in 0..self.files.len() {
                self.drain(fi)?;
            }
            self.verify_all_quiet()
        }
    }

    /// A child leaves, sometimes with a burst of long commands in flight.
    fn child_exit(&mut self, now: bool) -> Res {
        if !self.child {
            return Ok(());
        }
        if now || self.chance(70) {
            for fi in 0..self.files.len() {
                let Some(w) = self.files[fi].write_ring() else {
                    continue;
                };
                if self.files[fi].garbage {
                    continue;
                }
                let Some(r) = self.files[fi]
                    .regs
                    .iter()
                    .find(|r| r.dst_ok && r.access & WARPQ_ACCESS_WRITE != 0)
                    .cloned()
                else {
                    continue;
                };
                let tail = self.files[fi].tail.unwrap_or(0);
                let head = w.load(H_SQ_HEAD);
                let room = WARPQ_SQ_ENTRIES - tail.wrapping_sub(head).min(WARPQ_SQ_ENTRIES);
                for i in 0..room {
                    let s = warpq_sqe {
                        opcode: WARPQ_OP_FILL,
                        user_data: self.new_ud(),
                        dst: r.addr,
                        len: r.len.min(MAX_CMD),
                        value: u64::from(i),
                        ..Default::default()
                    };
                    w.write_sqe(tail.wrapping_add(i), &s);
                }
                w.store(H_SQ_TAIL, tail.wrapping_add(room));
                if let Some(fd) = self.fd_of(fi) {
                    self.wake(fd)?;
                }
            }
        }
        let _ = std::io::stdout().flush();
        // SAFETY: leave the child now, commands in flight (the point).
        unsafe { libc::_exit(0) };
    }

    /// Reaps exited children; with `block`, waits for all (bounded).
    fn reap_children(&mut self, block: bool) -> Res {
        let mut err = None;
        loop {
            let mut i = 0;
            while i < self.children.len() {
                let c = &self.children[i];
                let mut st = 0;
                // SAFETY: waiting for our own child.
                let r = unsafe { libc::waitpid(c.pid, &mut st, libc::WNOHANG) };
                if r == c.pid {
                    let pid = c.pid;
                    self.children.remove(i);
                    if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) != 0 {
                        err.get_or_insert(format!(
                            "child {pid} failed with exit status {}",
                            libc::WEXITSTATUS(st)
                        ));
                    } else if libc::WIFSIGNALED(st) {
                        err.get_or_insert(format!(
                            "child {pid} was killed by signal {}",
                            libc::WTERMSIG(st)
                        ));
                    }
                    continue;
                }
                if c.started.elapsed() > CHILD_LIMIT {
                    let pid = c.pid;
                    let stack =
                        std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
                    // SAFETY: killing our own hung child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    let t = Instant::now();
                    // SAFETY: waiting for our own child.
                    while unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == 0
                        && t.elapsed() < Duration::from_secs(10)
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    self.children.remove(i);
                    err.get_or_insert(format!("child {pid} did not finish within {CHILD_LIMIT:?}; its kernel stack:\n{stack}"));
                    continue;
                }
                i += 1;
            }
            if !block || self.children.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.children.is_empty() {
            self.zombies.clear();
        }
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    // ---- a run -----------------------------------------------------------------

    fn setup(&mut self) -> Res {
        self.act_open()?;
        while self.files[0].rings.is_empty() {
            self.act_map_ring()?;
        }
        self.act_new_buf()?;
        self.act_register()?;
        self.after_step()
    }

    fn run_steps(
        &mut self,
        steps: u64,
        budget: Duration,
        start: Instant,
    ) -> Result<(), (u64, Act, String)> {
        CUR_ACT.store(Act::Setup as u32, Ordering::Relaxed);
        STEP_T0.store(now_ms(), Ordering::SeqCst);
        let r = self.setup();
        STEP_T0.store(0, Ordering::SeqCst);
        r.map_err(|e| (0, Act::Setup, e))?;
        for s in 0..steps {
            if start.elapsed() > budget {
                println!(
                    "fuzz: seed {:#018x}: time budget reached at step {s}",
                    self.seed
                );
                break;
            }
            self.step = s;
            self.n.steps = s + 1;
            let a = self.pick_action();
            CUR_STEP.store(s, Ordering::Relaxed);
            CUR_ACT.store(a as u32, Ordering::Relaxed);
            STEP_T0.store(now_ms(), Ordering::SeqCst);
            let r = self.act(a).and_then(|()| self.after_step());
            STEP_T0.store(0, Ordering::SeqCst);
            r.map_err(|e| (s, a, e))?;
        }
        Ok(())
    }

    /// Closes everything (draining first unless `abrupt`).
    fn finish(&mut self, abrupt: bool) -> Res {
        CUR_ACT.store(Act::Cleanup as u32, Ordering::Relaxed);
        STEP_T0.store(now_ms(), Ordering::SeqCst);
        // Children are bounded on their own (CHILD_LIMIT): waiting for them
        // does not count against the run's time budget.
        let t = Instant::now();
        let mut err: Res = self.reap_children(true);
        self.child_wait = t.elapsed();
        if !abrupt {
            for fi in 0..self.files.len() {
                if err.is_ok() && self.chance(70) {
                    err = self.drain(fi).and_then(|()| self.reap(fi));
                }
            }
            if err.is_ok() {
                err = self.verify_all_quiet();
            }
            for fi in 0..self.files.len() {
                if err.is_ok() && self.chance(50) {
                    if let Some(fd) = self.files[fi].fds.first().copied() {
                        let handles: Vec<u64> =
                            self.files[fi].regs.iter().map(|r| r.handle).collect();
                        for h in handles {
                            let mut u = warpq_unregister {
                                size: 16,
                                rsvd: 0,
                                handle: h,
                            };
                            let got = self.call(fd, WARPQ_IOC_UNREGISTER, &mut u, Place::Normal);
                            let r = got.and_then(|g| {
                                Self::check(
                                    "UNREGISTER",
                                    E_UNREGISTER,
                                    g,
                                    &Expect::OkOr(vec![libc::EBUSY]),
                                )
                            });
                            if r.is_err() {
                                err = r;
                                break;
                            }
                        }
                    }
                }
            }
        }
        for f in self.files.drain(..) {
            for r in &f.rings {
                let _ = sys_munmap(r.addr, WARPQ_RING_SIZE);
            }
            for fd in f.fds {
                // SAFETY: closing our own descriptors.
                unsafe { libc::close(fd) };
            }
        }
        self.zombies.clear();
        for b in self.bufs.drain(..) {
            let _ = sys_munmap(b.addr, b.len);
        }
        for (t, tl) in self.tombs.drain(..) {
            let _ = sys_munmap(t, tl as usize);
        }
        let _ = sys_munmap(self.window, WIN_SLOTS * SLOT_BYTES);
        STEP_T0.store(0, Ordering::SeqCst);
        err
    }
}

// ---- the kernel log, pins, the watchdog -------------------------------------

fn driver_pinned(cfg: &Cfg) -> Result<u64, String> {
    let Some(name) = &cfg.dev_name else {
        return Err("no device name in sysfs".into());
    };
    let stats = warpq::sysfs::Sysfs::system()
        .stats(name)
        .map_err(|e| e.to_string())?;
    stats
        .iter()
        .find(|(k, _)| k == "pages_pinned")
        .map(|(_, v)| *v)
        .ok_or_else(|| "no pages_pinned counter".into())
}

/// Waits up to 10 s for the pins to balance (`nr_foll_pin_acquired ==
/// nr_foll_pin_released`: nothing else in the guest pins pages; a reading
/// taken at the start is no baseline, as /proc/vmstat lags the per-CPU
/// counters by a few pages until they are folded); the failure text if not.
fn settle(cfg: &Cfg, pins0: &PinCounts) -> Res {
    let t0 = Instant::now();
    loop {
        let pins = PinCounts::read().map_err(|e| e.to_string())?;
        let drv = driver_pinned(cfg);
        let balanced = pins.outstanding() == 0;
        if balanced && drv == Ok(0) {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "after closing everything and 10 s: {} pages pinned outstanding (the run started reading {}), the driver's pages_pinned is {:?}",
                pins.outstanding(),
                pins0.outstanding(),
                drv
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn watchdog() {
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let t0 = STEP_T0.load(Ordering::SeqCst);
        if t0 == 0 || now_ms().saturating_sub(t0) < HANG_MS.load(Ordering::Relaxed) {
            continue;
        }
        let pid = std::process::id();
        let stack = std::fs::read_to_string(format!("/proc/{pid}/stack"))
            .unwrap_or_else(|e| format!("({e})"));
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        let seed = CUR_SEED.load(Ordering::SeqCst);
        let step = CUR_STEP.load(Ordering::SeqCst);
        let act = NAMES[CUR_ACT.load(Ordering::SeqCst) as usize];
        println!(
            "fuzz: seed {seed:#018x} FAILED at step {step} ({act}): hang: the step has not returned after {} ms; wchan {wchan}; kernel stack:\n{stack}",
            now_ms() - t0
        );
        println!(
            "fuzz: replay with: warpq-fuzz --seed {seed:#x} --runs 1 --steps {}",
            step + 1
        );
        let _ = std::io::stdout().flush();
        // SAFETY: give up the whole process: the fuzzer is stuck.
        unsafe { libc::_exit(2) };
    }
}

/// SIGSEGV/SIGBUS: say where, then exit (async-signal-safe: no allocation).
extern "C" fn on_fatal(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let mut buf = [0u8; 256];
    let mut n = 0;
    let mut put = |s: &[u8]| {
        for &b in s {
            if n < buf.len() {
                buf[n] = b;
                n += 1;
            }
        }
    };
    let hex = |v: u64, put: &mut dyn FnMut(&[u8])| {
        let mut d = [0u8; 18];
        d[0] = b'0';
        d[1] = b'x';
        for i in 0..16 {
            let nib = ((v >> (60 - 4 * i)) & 0xf) as u8;
            d[2 + i] = if nib < 10 {
                b'0' + nib
            } else {
                b'a' + nib - 10
            };
        }
        put(&d);
    };
    put(b"fuzz: seed ");
    hex(CUR_SEED.load(Ordering::Relaxed), &mut put);
    put(if IN_CHILD.load(Ordering::Relaxed) {
        b" child"
    } else {
        b""
    });
    put(b" FAILED at step ");
    let mut step = CUR_STEP.load(Ordering::Relaxed);
    let mut digits = [0u8; 20];
    let mut k = digits.len();
    loop {
        k -= 1;
        digits[k] = b'0' + (step % 10) as u8;
        step /= 10;
        if step == 0 {
            break;
        }
    }
    put(&digits[k..]);
    put(b" (");
    put(NAMES[CUR_ACT.load(Ordering::Relaxed) as usize % NAMES.len()].as_bytes());
    put(if sig == libc::SIGBUS {
        b"): SIGBUS at "
    } else {
        b"): SIGSEGV at "
    });
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as u64;
    hex(addr, &mut put);
    put(b"\n");
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        libc::write(1, buf.as_ptr().cast(), n);
        libc::_exit(3);
    }
}

fn install_handlers() {
    // SAFETY: installs a handler that only uses async-signal-safe calls.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_fatal as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}

// ---- main ----------------------------------------------------------------------

struct Opts {
    seed: u64,
    runs: u64,
    steps: u64,
    seconds: f64,
    device: Option<String>,
}

fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_args() -> Result<Opts, String> {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut o = Opts {
        seed: splitmix(clock) & 0xffff_ffff,
        runs: 20,
        steps: 300,
        seconds: 100.0,
        device: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = args
            .get(i + 1)
            .cloned()
            .ok_or_else(|| format!("{} needs a value", args[i]))?;
        match args[i].as_str() {
            "--seed" => o.seed = parse_num(&val).ok_or("bad --seed")?,
            "--runs" => o.runs = parse_num(&val).ok_or("bad --runs")?,
            "--steps" => o.steps = parse_num(&val).ok_or("bad --steps")?,
            "--seconds" => o.seconds = val.parse().map_err(|_| "bad --seconds")?,
            "--device" => o.device = Some(val),
            other => return Err(format!("unknown argument {other}")),
        }
        i += 2;
    }
    if o.runs == 0 || o.seconds <= 0.0 {
        return Err("--runs and --seconds must be positive".into());
    }
    Ok(o)
}

fn probe(o: &Opts) -> Result<Cfg, String> {
    let devs = warpq::devices().unwrap_or_default();
    let named = devs.iter().find(|d| d.name.is_some());
    let path = match (&o.device, named) {
        (Some(p), _) => p.clone(),
        (None, Some(d)) => d
            .dev_path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/dev/warpq0".into()),
        (None, None) => "/dev/warpq0".into(),
    };
    let dev_name = std::path::Path::new(&path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let cpath = CString::new(path.clone()).map_err(|_| "bad device path")?;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("open {path}: {}", ename(errno())));
    }
    // The sizes of the kernel's structures: it writes them back.
    let mut ib = InfoBuf::default();
    ib.i.size = std::mem::size_of::<InfoBuf>() as u32;
    let r = sys_ioctl(fd, WARPQ_IOC_INFO, &mut ib as *mut InfoBuf as u64);
    let mut sb = StatsBuf::default();
    sb.s.size = std::mem::size_of::<StatsBuf>() as u32;
    let r2 = sys_ioctl(fd, WARPQ_IOC_STATS, &mut sb as *mut StatsBuf as u64);
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    r.map_err(|e| format!("INFO: {}", ename(e)))?;
    r2.map_err(|e| format!("STATS: {}", ename(e)))?;
    let info = ib.i;
    if (info.size as usize) < 48 || sb.s.size < 248 {
        return Err(format!(
            "INFO says {} bytes, STATS {}: not version 1",
            info.size, sb.s.size
        ));
    }
    let engine = std::fs::read_to_string("/sys/module/warpq/parameters/engine").unwrap_or_default();
    Ok(Cfg {
        path: cpath,
        dev_name,
        max_regions: info.max_regions as usize,
        max_region_bytes: info.max_region_bytes,
        edu_engine: engine.trim() == "edu",
        info_size: info.size as usize,
        stats_size: sb.s.size as usize,
        policy: info.policy,
        dma_translation: info.dma_translation,
    })
}

/// One run: the counters, or the failed step, its action and what failed.
fn run_one(
    cfg: &Cfg,
    seed: u64,
    steps: u64,
    budget: Duration,
    kmsg: &mut KernelLog,
) -> Result<Counters, (u64, String, String)> {
    CUR_SEED.store(seed, Ordering::SeqCst);
    CUR_STEP.store(0, Ordering::SeqCst);
    let pins0 = PinCounts::read().map_err(|e| (0, "setup".to_string(), e.to_string()))?;
    let start = Instant::now();
    let mut w = World::new(cfg, seed).map_err(|e| (0, "setup".to_string(), e))?;
    let mut result = w.run_steps(steps, budget, start);
    if let Err((_, _, e)) = &mut result {
        *e += &format!("\n  the last steps:{}", w.history_text());
    }
    let failed_step = result.as_ref().err().map(|e| e.0);
    let abrupt = result.is_err() || w.chance(30);
    let cleanup = w.finish(abrupt);
    let elapsed = start.elapsed().saturating_sub(w.child_wait);
    let settled = settle(cfg, &pins0);
    let splats: Vec<String> = kmsg.new_splats();
    let step = failed_step.unwrap_or(w.n.steps.saturating_sub(1));
    let mut errs: Vec<(u64, String, String)> = Vec::new();
    if let Err((s, a, e)) = result {
        errs.push((s, a.name().to_string(), e));
    }
    if let Err(e) = cleanup {
        errs.push((step, "cleanup".into(), e));
    }
    if elapsed > 2 * budget {
        errs.push((
            step,
            "run".into(),
            format!(
                "the run took {elapsed:?} (not counting {:?} waiting for children), over twice its budget of {budget:?}",
                w.child_wait
            ),
        ));
    }
    if let Err(e) = settled {
        errs.push((step, "pins".into(), e));
    }
    if !splats.is_empty() {
        errs.push((
            step,
            "kernel log".into(),
            format!("the kernel log shows:\n  {}", splats.join("\n  ")),
        ));
    }
    match errs.len() {
        0 => Ok(w.n),
        _ => {
            let (s, a, first) = errs.remove(0);
            let rest: String = errs
                .into_iter()
                .map(|(_, a, e)| format!("\n  also ({a}): {e}"))
                .collect();
            Err((s, a, format!("{first}{rest}")))
        }
    }
}

fn main() -> ExitCode {
    START.get_or_init(Instant::now);
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("warpq-fuzz: {e}\nusage: warpq-fuzz [--seed S] [--runs N] [--steps K] [--seconds T] [--device PATH]");
            return ExitCode::from(2);
        }
    };
    install_handlers();
    let cfg = match probe(&o) {
        Ok(c) => c,
        Err(e) => {
            println!("fuzz: FAILED before the first run: {e}");
            return ExitCode::FAILURE;
        }
    };
    let budget = Duration::from_secs_f64(o.seconds / o.runs as f64).max(Duration::from_secs(2));
    HANG_MS.store(
        (2 * budget.as_millis() as u64).max(45_000),
        Ordering::Relaxed,
    );
    std::thread::spawn(watchdog);
    println!(
        "fuzz: {} policy {} dma_translation {} engine {} max_regions {} (INFO {} bytes, STATS {}); {} runs of up to {} steps, {:?} each, {} s in all",
        cfg.path.to_string_lossy(),
        if cfg.policy == WARPQ_POLICY_STRICT { "strict" } else { "filtered" },
        cfg.dma_translation,
        if cfg.edu_engine { "edu" } else { "cpu" },
        cfg.max_regions,
        cfg.info_size,
        cfg.stats_size,
        o.runs,
        o.steps,
        budget,
        o.seconds
    );
    let mut kmsg = match KernelLog::from_now() {
        Ok(k) => k,
        Err(e) => {
            println!("fuzz: FAILED before the first run: /dev/kmsg: {e}");
            return ExitCode::FAILURE;
        }
    };
    let t0 = Instant::now();
    let (mut done, mut failed) = (0u64, 0u64);
    let mut total = Counters::default();
    for i in 0..o.runs {
        if t0.elapsed().as_secs_f64() >= o.seconds {
            println!("fuzz: time budget of {} s reached", o.seconds);
            break;
        }
        let seed = o.seed.wrapping_add(i);
        println!("fuzz: seed {seed:#018x}");
        let r = run_one(&cfg, seed, o.steps, budget, &mut kmsg);
        done += 1;
        match r {
            Ok(n) => {
                total.add(&n);
                println!(
                    "fuzz: seed {seed:#018x} steps {} ioctls {} commands {} completions {} forks {} faults {} ok",
                    n.steps, n.ioctls, n.commands, n.completions, n.forks, n.faults
                );
            }
            Err((step, act, e)) => {
                failed += 1;
                println!("fuzz: seed {seed:#018x} FAILED at step {step} ({act}): {e}");
                println!(
                    "fuzz: replay with: warpq-fuzz --seed {seed:#x} --runs 1 --steps {}",
                    step + 1
                );
            }
        }
        let _ = std::io::stdout().flush();
    }
    println!(
        "fuzz: checked in the runs that passed: {} completions with a predicted status, {} CRC32C results, {} buffer bytes against the model; {} garbage rings, {} resynchronised; {} aborted",
        total.predicted, total.crcs, total.verified, total.garbage, total.resyncs, total.aborted
    );
    println!("fuzz: {done} runs, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
