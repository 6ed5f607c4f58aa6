// SPDX-License-Identifier: GPL-2.0

//! The region table of one mm context.
//!
//! A region is a user buffer the device may touch: `[start, start + len)`
//! with read and/or write access for the device. It is cut into chunks of
//! `1 << chunk_shift` bytes (the last may be shorter; at most
//! [`MAX_CHUNKS`] of them), and each chunk has its own state
//! ([`ChunkState`]): its pages are made reachable (pinned or mirrored) and
//! DMA-mapped while it is mapped, independently of the other chunks. An
//! invalidation tears down only the chunks its range intersects, and a
//! rebuild maps only the chunks a command waits for (their *wanted* flag).
//!
//! # Who may touch the table
//!
//! - Changes: only with the context lock `L` held *and* the queue gate
//!   paused and drained (the [`Drained`](super::gate::Drained) proof).
//! - Reads: with `L` held, or by the engine while it is inside the gate.
//!
//! Both rules are checked by [`MmContext`](super::context::MmContext), which
//! is the only caller of the `unsafe` accessors below. Each slot is a
//! [`sync::UnsafeCell`](super::sync::UnsafeCell), so the loom models check
//! every access to it against those rules.
//!
//! # Chunk flags
//!
//! Beside its state each chunk has atomic flags ([`Chunk`]), which the
//! engine (inside the gate) and the holders of `L` set and clear through
//! shared references, under the read rule above:
//!
//! - *wanted*: a command waits for the chunk. The engine sets it from
//!   inside the gate, on unmapped chunks only (then marks the gate stale and
//!   leaves); a publish, a refusal or a kill clears it, so a wanted chunk is
//!   always unmapped. Each slot counts its wanted chunks (`wanting`), so
//!   the rebuild's search skips regions nobody waits on without reading
//!   their chunks. The drain orders the engine's flags before a writer (its
//!   leave is a release, the drain's check an acquire).
//! - *refused*: a rebuild that cannot fault in a chunk a command waits for
//!   (no permission any more, a hole, a truncated file) sets it, with `L`
//!   held and the gate drained, and reopens the queue; the engine, inside
//!   the gate, finds it when it retries the waiting command, clears it and
//!   fails that command. The chunk stays unmapped: the next command on it
//!   asks for a rebuild again, which may succeed (an `mprotect` back, a new
//!   page). So a failure costs the commands that waited for it, never the
//!   chunk for good (only an UNMAP kills a chunk). The reopen orders the
//!   flag before the engine's next entry.
//! - *short*: the same for a rebuild that failed for want of memory (the
//!   `RLIMIT_MEMLOCK` charge, an allocation, device addresses) after
//!   evicting what it could: the command that waited fails with its own
//!   fault ([`XlateFault::NoMemory`]), not the queue.
//! - *claimed*: a rebuild maps the chunk now, so another leaves it alone
//!   (set and cleared under `L` only; `rebuild.rs`).
//! - *used* and the reservation: the clock's, below.
//!
//! # Device addresses on demand
//!
//! A queue may hold at most a share of the device's address window
//! ([`Config::device_share`](super::context::Config::device_share)); a
//! rebuild that would exceed it first evicts mapped chunks
//! ([`RegionTable::evict_one`]), least recently used first, approximated by
//! a clock: each chunk has a reference flag (*used*) that the engine sets
//! when a command touches the chunk and a publish sets for a fresh chunk;
//! the clock hand clears set flags and evicts the first mapped chunk whose
//! flag is clear and that no command waits for. An evicted chunk is
//! unmapped like a torn-down one, so the next command on it waits for a
//! rebuild.
//!
//! Forward progress: a command that waits for a rebuild reserves every
//! chunk it touches (the chunk's reservation takes the table's current
//! reservation epoch; it is dropped when a translation of the command
//! succeeds, i.e. when it runs, or when the chunk is refused, killed or
//! removed; and when no command waits any more, the engine starts a new
//! epoch, which drops every reservation at once). The clock never evicts a
//! reserved chunk, so two commands that wait for different chunks cannot
//! evict each other's chunks for ever; if only reserved chunks are left,
//! the rebuild maps over the share (`rebuild.rs`).
//!
//! # Capacity
//!
//! The table has `N` slots (1024 in the driver). What a region costs grows
//! with what it holds, not with the table: a slot is a description and a
//! pointer, and the region's chunks ([`Mapping::Chunks`], state and flags)
//! are allocated by the caller for each registration, before it takes `L`.
//! A region has at most [`MAX_CHUNKS`] chunks (65536: 4 GiB of 64 KiB
//! chunks, 128 GiB of 2 MiB ones); a longer one gets larger chunks. The
//! engine finds a region by a binary search of `order`, the live slots
//! sorted by start address (regions never overlap), which the writers keep
//! sorted; the bytes the mapped chunks hold are a running sum, kept by
//! every writer that maps or unmaps a chunk. Neither grows with `N` on the
//! engine's or the rebuild's path.

use core::ops::Range;

use super::platform::Mapping;
use super::sync::{AtomicBool, AtomicU32, AtomicU64, Ordering, UnsafeCell};

/// What the device may do with a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Access(u8);

impl Access {
    /// No access.
    pub const NONE: Access = Access(0);
    /// The device may read.
    pub const READ: Access = Access(1);
    /// The device may write.
    pub const WRITE: Access = Access(2);
    /// The device may read and write.
    pub const READ_WRITE: Access = Access(3);

    /// Access from raw bits; `None` if unknown bits are set.
    pub const fn from_bits(bits: u8) -> Option<Access> {
        if bits & !Self::READ_WRITE.0 == 0 {
            Some(Access(bits))
        } else {
            None
        }
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// True if every right in `other` is also in `self`.
    pub const fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if no right is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True if the device may write (pages are pinned with `FOLL_WRITE` and
    /// marked dirty when unpinned).
    pub const fn device_writes(self) -> bool {
        self.contains(Self::WRITE)
    }
}

/// Chunks per region at most: a region longer than `MAX_CHUNKS` chunks of
/// the preferred size gets larger chunks ([`chunk_shift_for`]). It bounds
/// what one registration allocates for its chunks (about 6 MiB at most in
/// the driver), not a table: a region of 4 GiB still has chunks of 64 KiB.
pub const MAX_CHUNKS: usize = 1 << 16;

/// The smallest chunk: 64 KiB.
pub const MIN_CHUNK_SHIFT: u8 = 16;

/// The chunk size (as a shift) for a region of `len` bytes when
/// `preferred_shift` is asked for: at least [`MIN_CHUNK_SHIFT`], and large
/// enough that the region has at most [`MAX_CHUNKS`] chunks.
pub const fn chunk_shift_for(len: u64, preferred_shift: u8) -> u8 {
    let mut shift = if preferred_shift < MIN_CHUNK_SHIFT { MIN_CHUNK_SHIFT } else { preferred_shift };
    while shift < 63 && len.div_ceil(1u64 << shift) > MAX_CHUNKS as u64 {
        shift += 1;
    }
    shift
}

/// How many chunk states a region of `len` bytes needs when
/// `preferred_shift` is asked for: what the caller allocates for
/// [`Mapping::Chunks`] before a registration.
pub const fn chunk_count_for(len: u64, preferred_shift: u8) -> usize {
    len.div_ceil(1u64 << chunk_shift_for(len, preferred_shift)) as usize
}

/// Names one registered region; a handle of a removed region never matches
/// the region that reuses its slot (the slot generation differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionHandle {
    slot: u16,
    generation: u32,
}

impl RegionHandle {
    /// The slot index in the table.
    pub const fn slot(self) -> usize {
        self.slot as usize
    }

    /// The slot generation (never 0).
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// The handle as one integer for the uapi: `generation << 16 | slot`.
    pub const fn to_raw(self) -> u64 {
        ((self.generation as u64) << 16) | self.slot as u64
    }

    /// Parses [`RegionHandle::to_raw`]; `None` for values no handle has.
    pub const fn from_raw(raw: u64) -> Option<RegionHandle> {
        let generation = raw >> 16;
        if generation == 0 || generation > u32::MAX as u64 {
            return None;
        }
        Some(RegionHandle { slot: (raw & 0xffff) as u16, generation: generation as u32 })
    }
}

/// A registered region's fixed description (never changes while it lives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionDesc {
    /// The region's handle.
    pub handle: RegionHandle,
    /// First user virtual address.
    pub start: u64,
    /// Length in bytes (never 0; `start + len` does not overflow).
    pub len: u64,
    /// What the device may do.
    pub access: Access,
    /// Chunk size as a shift ([`chunk_shift_for`]).
    pub chunk_shift: u8,
}

impl RegionDesc {
    /// One past the last address.
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }

    /// True if `[start, end)` intersects the region.
    pub const fn overlaps(&self, start: u64, end: u64) -> bool {
        start < self.end() && self.start < end
    }

    /// Bytes per chunk (the last chunk may be shorter).
    pub const fn chunk_bytes(&self) -> u64 {
        1u64 << self.chunk_shift
    }

    /// Number of chunks (1..=[`MAX_CHUNKS`] for a registered region).
    pub const fn chunk_count(&self) -> usize {
        self.len.div_ceil(self.chunk_bytes()) as usize
    }

    /// `(start, len)` of chunk `chunk` in user addresses.
    pub const fn chunk_range(&self, chunk: usize) -> (u64, u64) {
        let offset = (chunk as u64) << self.chunk_shift;
        let len = if self.len - offset < self.chunk_bytes() { self.len - offset } else { self.chunk_bytes() };
        (self.start + offset, len)
    }

    /// The chunks `[start, end)` intersects (empty if it does not overlap).
    pub fn chunks_in(&self, start: u64, end: u64) -> Range<usize> {
        if !self.overlaps(start, end) {
            return 0..0;
        }
        let first = (start.max(self.start) - self.start) >> self.chunk_shift;
        let last = (end.min(self.end()) - 1 - self.start) >> self.chunk_shift;
        first as usize..last as usize + 1
    }
}

/// Where a region is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Registered; its interval notifier is not armed yet, so none of its
    /// chunks may be mapped ([`MmContext::arm`](super::context::MmContext::arm)).
    Pending,
    /// Armed: each chunk has its own [`ChunkState`].
    Armed,
    /// The context was released: nothing may be mapped again.
    Dead,
}

/// The state of one chunk of an armed region.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkState<M> {
    /// Needs a rebuild: nothing reachable.
    Unmapped,
    /// Pinned or mirrored and DMA-mapped, valid as of notifier sequence `seq`.
    Mapped {
        /// `mmu_interval_read_begin()` value the mapping was checked against.
        seq: u64,
        /// The chunk's pages and DMA addresses.
        mapping: M,
    },
    /// Cannot be rebuilt (the range is gone or lost its permission);
    /// commands touching it fail with a fault status.
    Dead,
}

/// One chunk of a region: its state, under the table's rules, and its
/// flags, atomics set and cleared through shared references (see the
/// module docs).
pub struct Chunk<M> {
    state: ChunkState<M>,
    flags: AtomicU32,
    /// The reservation epoch the chunk was last reserved in (0: never; see
    /// the module docs). 64 bits: a reservation left behind must not come
    /// back when the epoch wraps.
    reserved: AtomicU64,
}

/// A command waits for the chunk (it is unmapped).
const WANTED: u32 = 1 << 0;
/// Its rebuild could not fault it in; a waiting command is to fail.
const REFUSED: u32 = 1 << 1;
/// Its rebuild ran out of memory; a waiting command is to fail.
const SHORT: u32 = 1 << 2;
/// The clock's reference flag.
const USED: u32 = 1 << 3;
/// A rebuild maps it now (under `L` only).
const CLAIMED: u32 = 1 << 4;

impl<M> Chunk<M> {
    /// An unmapped chunk with no flag set: what a registration hands in
    /// ([`Mapping::Chunks`]).
    pub fn new() -> Self {
        Self { state: ChunkState::Unmapped, flags: AtomicU32::new(0), reserved: AtomicU64::new(0) }
    }

    fn is_unmapped(&self) -> bool {
        matches!(self.state, ChunkState::Unmapped)
    }

    fn is_mapped(&self) -> bool {
        matches!(self.state, ChunkState::Mapped { .. })
    }

    fn has(&self, flag: u32) -> bool {
        self.flags.load(Ordering::Acquire) & flag != 0
    }

    /// Sets `flag`; true if it was clear.
    fn set(&self, flag: u32) -> bool {
        self.flags.fetch_or(flag, Ordering::AcqRel) & flag == 0
    }

    /// Clears the flags in `flags`; returns those that were set.
    fn clear(&self, flags: u32) -> u32 {
        self.flags.fetch_and(!flags, Ordering::AcqRel) & flags
    }

    /// Sets the clock's reference flag (a plain load first: the engine
    /// touches the same chunks over and over).
    fn mark_used(&self) {
        if self.flags.load(Ordering::Relaxed) & USED == 0 {
            self.flags.fetch_or(USED, Ordering::Relaxed);
        }
    }

    fn is_pristine(&self) -> bool {
        self.is_unmapped() && self.flags.load(Ordering::Relaxed) == 0 && self.reserved.load(Ordering::Relaxed) == 0
    }
}

impl<M> Default for Chunk<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> core::fmt::Debug for Chunk<M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = match self.state {
            ChunkState::Unmapped => "unmapped",
            ChunkState::Mapped { .. } => "mapped",
            ChunkState::Dead => "dead",
        };
        f.debug_struct("Chunk").field("state", &state).field("flags", &self.flags.load(Ordering::Relaxed)).finish()
    }
}

/// A summary of a region's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    /// Registered, notifier not armed yet.
    Pending,
    /// Armed, no chunk mapped (and not every chunk dead).
    Unmapped,
    /// Armed, some chunks mapped and some not.
    Partial {
        /// Chunks mapped.
        mapped: u32,
    },
    /// Every chunk mapped; `seq` is the newest sequence among them.
    Mapped {
        /// The newest sequence a chunk was published at.
        seq: u64,
    },
    /// Released, or every chunk dead.
    Dead,
}

/// A copy of one region's description and state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    /// The description.
    pub desc: RegionDesc,
    /// The summary.
    pub state: StateKind,
    /// Pages mapped now (over all chunks).
    pub pages: u64,
    /// Chunks mapped.
    pub mapped_chunks: u32,
    /// Chunks dead.
    pub dead_chunks: u32,
    /// Chunks whose rebuild failed, with a command still to be failed for
    /// it (see the module docs).
    pub refused_chunks: u32,
    /// Of those, the chunks refused for want of memory.
    pub short_chunks: u32,
}

/// Why a region-table operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// The lock key passed in belongs to another context.
    WrongLock,
    /// The context was released.
    Released,
    /// The queue did not drain in time (the engine is stuck); nothing
    /// changed, try again.
    Busy,
    /// No live region has this handle.
    NoSuchRegion,
    /// The region is not in a state that allows the operation.
    InvalidState,
    /// Zero length.
    ZeroLength,
    /// `start + len` overflows.
    Overflow,
    /// No access right, or unknown bits.
    InvalidAccess,
    /// The range intersects this live region.
    Overlaps(RegionHandle),
    /// Every slot is in use.
    TableFull,
    /// The chunk states handed in are fewer than the region's chunks
    /// ([`chunk_count_for`]), or not all unmapped.
    BadChunkStorage,
}

/// Why the engine cannot use an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XlateFault {
    /// No region contains the address.
    NotRegistered,
    /// The access starts in a region but runs past its end (or overflows).
    CrossesEnd,
    /// The region does not grant the access.
    AccessDenied,
    /// The region is registered but its notifier is not armed yet.
    NotMapped,
    /// A chunk the access needs is unmapped: the command waits for a
    /// rebuild of the unmapped chunks of `touched` (see
    /// [`EngineGuard::request_rebuild`]).
    ///
    /// [`EngineGuard::request_rebuild`]: super::context::EngineGuard::request_rebuild
    NeedsRebuild {
        /// The chunks the access touches; it waits for those of them that
        /// are unmapped.
        touched: Footprint,
    },
    /// The region, or a chunk the access needs, is dead.
    Dead,
    /// The rebuild of a chunk this command waited for failed (it could not
    /// be faulted in): the command fails; the next one tries again.
    Refused,
    /// The rebuild of a chunk this command waited for ran out of memory
    /// (the `pin` charge against `RLIMIT_MEMLOCK`, an allocation, the
    /// device's addresses) even after evicting other chunks: the command
    /// fails; the next one tries again.
    NoMemory,
}

/// Why a rebuild gave up on a chunk a command waited for
/// ([`RegionTable::refuse`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It could not be faulted in ([`XlateFault::Refused`]).
    Gone,
    /// Out of memory ([`XlateFault::NoMemory`]).
    NoMemory,
}

/// The chunks `first..=last` of one region that a command's access
/// touches (see [`RegionTable::footprint`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// The region.
    pub region: RegionHandle,
    /// The first chunk touched.
    pub first: u32,
    /// The last chunk touched.
    pub last: u32,
}

impl Footprint {
    /// Whether the two touch a chunk in common.
    pub fn overlaps(&self, other: &Footprint) -> bool {
        self.region == other.region && self.first <= other.last && other.first <= self.last
    }
}

/// A successful translation: the access lies inside the region at `offset`,
/// and every chunk it touches is mapped.
#[derive(Debug)]
pub struct Translation<'a, M> {
    /// The region.
    pub region: RegionHandle,
    /// The mapping of the chunk holding the access's first byte.
    pub mapping: &'a M,
    /// Byte offset of the access from the region's start.
    pub offset: u64,
    /// The sequence the first chunk's mapping was published at.
    pub seq: u64,
    chunk_shift: u8,
    chunks: &'a [Chunk<M>],
}

impl<'a, M> Translation<'a, M> {
    /// The mapping of the chunk holding region offset `pos`, and `pos`'s
    /// offset inside that chunk; `None` outside the mapped chunks (never
    /// inside the translated access).
    pub fn locate(&self, pos: u64) -> Option<(&'a M, u64)> {
        let chunk = usize::try_from(pos >> self.chunk_shift).ok()?;
        match &self.chunks.get(chunk)?.state {
            ChunkState::Mapped { mapping, .. } => Some((mapping, pos & ((1u64 << self.chunk_shift) - 1))),
            _ => None,
        }
    }
}

struct Entry<M: Mapping> {
    desc: RegionDesc,
    phase: Phase,
    /// At least `desc.chunk_count()` chunks (the caller's allocation).
    chunks: M::Chunks,
}

struct Slot<M: Mapping> {
    /// Generation of the current (or next) occupant; never 0.
    generation: u32,
    entry: Option<Entry<M>>,
}

impl<M: Mapping> Entry<M> {
    fn live_chunks(&self) -> &[Chunk<M>] {
        &self.chunks[..self.desc.chunk_count()]
    }

    fn info(&self) -> RegionInfo {
        let (mut mapped, mut dead, mut pages, mut newest) = (0u32, 0u32, 0u64, 0u64);
        let (mut refused, mut short) = (0u32, 0u32);
        for chunk in self.live_chunks() {
            let flags = chunk.flags.load(Ordering::Acquire);
            if flags & (REFUSED | SHORT) != 0 {
                refused += 1;
            }
            if flags & SHORT != 0 {
                short += 1;
            }
            match &chunk.state {
                ChunkState::Mapped { seq, mapping } => {
                    mapped += 1;
                    pages = pages.saturating_add(mapping.page_count());
                    newest = newest.max(*seq);
                }
                ChunkState::Dead => dead += 1,
                ChunkState::Unmapped => {}
            }
        }
        let count = self.desc.chunk_count() as u32;
        let state = match self.phase {
            Phase::Pending => StateKind::Pending,
            Phase::Dead => StateKind::Dead,
            Phase::Armed if dead == count => StateKind::Dead,
            Phase::Armed if mapped == count => StateKind::Mapped { seq: newest },
            Phase::Armed if mapped == 0 => StateKind::Unmapped,
            Phase::Armed => StateKind::Partial { mapped },
        };
        RegionInfo {
            desc: self.desc,
            state,
            pages,
            mapped_chunks: mapped,
            dead_chunks: dead,
            refused_chunks: refused,
            short_chunks: short,
        }
    }
}

/// The live slots sorted by their region's start address (the engine's
/// translation index; see the module docs).
struct Order<const N: usize> {
    len: usize,
    slots: [u16; N],
}

/// Fixed-capacity table of the regions of one mm context.
pub struct RegionTable<M: Mapping, const N: usize> {
    slots: [UnsafeCell<Slot<M>>; N],
    /// The translation index (same rules as the slots).
    order: UnsafeCell<Order<N>>,
    /// Bytes of user memory in mapped chunks, over all regions (same rules
    /// as the slots: every writer that maps or unmaps a chunk keeps it).
    mapped: UnsafeCell<u64>,
    /// Some chunk may be reserved in the current epoch (only the engine
    /// reserves and clears reservations, see [`Self::clear_reservations`]).
    any_reserved: AtomicBool,
    /// The reservation epoch: a chunk is reserved while its reservation
    /// holds this value (never 0; see the module docs).
    epoch: AtomicU64,
    /// Per slot: how many of its region's chunks are wanted (see the module
    /// docs).
    wanting: [AtomicU32; N],
    /// Per slot: no chunk below this one is wanted, so the search for
    /// wanted chunks starts here. `want_chunk` lowers it; clearing the
    /// wanted flag of the chunk it names moves it up by one, which only
    /// happens with the gate drained (no `want_chunk` meanwhile). Without
    /// it, mapping a region of `n` chunks in order would read `n * n / 2`
    /// flags.
    want_hint: [AtomicU32; N],
    /// The clock hand: the slot (high 32 bits) and chunk (low 32 bits) it
    /// looks at next (only moved under `L`).
    hand: AtomicU64,
    /// Bumped (under `L`) whenever a chunk is published, refused or killed:
    /// a command set aside for a rebuild may be able to move on (the
    /// engine retries its set-aside commands when this changed,
    /// `overtake.rs`).
    resolved: AtomicU64,
}

// SAFETY: the slots are only accessed under the rules in the module
// documentation (writes exclusive through `L` plus a drained gate, reads under
// `L` or inside the gate), so sharing the table between threads is sound as
// long as the mappings themselves may be sent and shared.
unsafe impl<M: Mapping + Send + Sync, const N: usize> Sync for RegionTable<M, N> where M::Chunks: Send + Sync {}

impl<M: Mapping, const N: usize> Default for RegionTable<M, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Mapping, const N: usize> RegionTable<M, N> {
    /// An empty table. `N` must fit a `u16` slot index; larger tables only
    /// use the first 65536 slots.
    pub fn new() -> Self {
        Self {
            slots: core::array::from_fn(|_| UnsafeCell::new(Slot { generation: 1, entry: None })),
            order: UnsafeCell::new(Order { len: 0, slots: [0; N] }),
            mapped: UnsafeCell::new(0),
            any_reserved: AtomicBool::new(false),
            epoch: AtomicU64::new(1),
            wanting: core::array::from_fn(|_| AtomicU32::new(0)),
            want_hint: core::array::from_fn(|_| AtomicU32::new(0)),
            hand: AtomicU64::new(0),
            resolved: AtomicU64::new(0),
        }
    }

    /// Writes an empty table at `slot`, one slot at a time (never the
    /// whole table on the stack).
    ///
    /// # Safety
    ///
    /// `slot` is valid for writes of `Self` and properly aligned.
    pub unsafe fn init_in_place(slot: *mut Self) {
        // SAFETY: the fields of a valid, aligned `Self` are valid and
        // aligned arrays; each element is written exactly once.
        unsafe {
            let slots = core::ptr::addr_of_mut!((*slot).slots).cast::<UnsafeCell<Slot<M>>>();
            let wanting = core::ptr::addr_of_mut!((*slot).wanting).cast::<AtomicU32>();
            let want_hint = core::ptr::addr_of_mut!((*slot).want_hint).cast::<AtomicU32>();
            for i in 0..N {
                slots.add(i).write(UnsafeCell::new(Slot { generation: 1, entry: None }));
                wanting.add(i).write(AtomicU32::new(0));
                want_hint.add(i).write(AtomicU32::new(0));
            }
            // Not `[0; N]` through the stack: outside loom the cell is a
            // transparent wrapper, and an empty index is all zero.
            #[cfg(not(loom))]
            core::ptr::addr_of_mut!((*slot).order).write_bytes(0, 1);
            #[cfg(loom)]
            core::ptr::addr_of_mut!((*slot).order).write(UnsafeCell::new(Order { len: 0, slots: [0; N] }));
            core::ptr::addr_of_mut!((*slot).mapped).write(UnsafeCell::new(0));
            core::ptr::addr_of_mut!((*slot).any_reserved).write(AtomicBool::new(false));
            core::ptr::addr_of_mut!((*slot).epoch).write(AtomicU64::new(1));
            core::ptr::addr_of_mut!((*slot).hand).write(AtomicU64::new(0));
            core::ptr::addr_of_mut!((*slot).resolved).write(AtomicU64::new(0));
        }
    }

    /// How many times a chunk was published, refused or killed (see
    /// `resolved`): the engine compares it with the value it last retried
    /// its set-aside commands at.
    pub fn resolved(&self) -> u64 {
        self.resolved.load(Ordering::Acquire)
    }

    fn note_resolved(&self) {
        self.resolved.fetch_add(1, Ordering::AcqRel);
    }

    /// Number of slots usable (capacity).
    pub const fn capacity(&self) -> usize {
        if N > u16::MAX as usize + 1 {
            u16::MAX as usize + 1
        } else {
            N
        }
    }

    /// A command waits for the unmapped chunks of `touched`: marks them
    /// wanted (the engine, from inside the gate; or a holder of `L`).
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn want(&self, touched: Footprint) {
        // SAFETY: forwarded contract.
        let Some(entry) = (unsafe { self.entry(touched.region) }) else { return };
        if entry.phase != Phase::Armed {
            return;
        }
        let live = entry.live_chunks();
        let end = (touched.last as usize).saturating_add(1).min(live.len());
        let first = touched.first as usize;
        for (i, chunk) in live.iter().enumerate().take(end).skip(first) {
            if chunk.is_unmapped() {
                self.want_chunk(touched.region.slot(), i, chunk);
            }
        }
    }

    /// Marks chunk `index` (`chunk`, unmapped, of the region in slot
    /// `slot`) wanted, and counts it if it was not; the slot's search hint
    /// moves down to it.
    fn want_chunk(&self, slot: usize, index: usize, chunk: &Chunk<M>) {
        if let Some(hint) = self.want_hint.get(slot) {
            hint.fetch_min(index as u32, Ordering::AcqRel);
        }
        if chunk.set(WANTED) {
            if let Some(wanting) = self.wanting.get(slot) {
                wanting.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Clears `flags` of chunk `index` of `chunks` (the live chunks of the
    /// region in slot `slot`), keeping the slot's count of wanted chunks
    /// and its search hint; returns those that were set. Clearing the
    /// wanted flag is a write: only with `L` held and the gate drained.
    fn clear_flags(&self, slot: usize, chunks: &[Chunk<M>], index: usize, flags: u32) -> u32 {
        let Some(chunk) = chunks.get(index) else { return 0 };
        let was = chunk.clear(flags);
        if was & WANTED != 0 {
            if let Some(wanting) = self.wanting.get(slot) {
                wanting.fetch_sub(1, Ordering::AcqRel);
            }
            if let Some(hint) = self.want_hint.get(slot) {
                // The gate is drained, so no `want_chunk` moves it
                // meanwhile: up to the first chunk still wanted (the one it
                // names, if that is still wanted: one read). Each chunk is
                // passed once between two wants, whatever order the
                // chunks are published, refused or killed in.
                let from = hint.load(Ordering::Acquire) as usize;
                if from <= index {
                    let next =
                        chunks.iter().skip(from).position(|c| c.has(WANTED)).map_or(chunks.len(), |at| from + at);
                    hint.store(next as u32, Ordering::Release);
                }
            }
        }
        was
    }

    /// Whether some chunk of the region in slot `slot` is wanted.
    fn any_wanted_in(&self, slot: usize) -> bool {
        self.wanting.get(slot).is_some_and(|w| w.load(Ordering::Acquire) != 0)
    }

    /// A command that waits touches `chunk`: keep it (the current epoch).
    fn reserve(&self, chunk: &Chunk<M>) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        if chunk.reserved.load(Ordering::Relaxed) != epoch {
            chunk.reserved.store(epoch, Ordering::Relaxed);
        }
        if !self.any_reserved.load(Ordering::Relaxed) {
            self.any_reserved.store(true, Ordering::Relaxed);
        }
    }

    /// `chunk` is no longer kept for a waiting command (it runs now, or
    /// failed, or the chunk went away).
    fn unreserve(&self, chunk: &Chunk<M>) {
        if chunk.reserved.load(Ordering::Relaxed) != 0 {
            chunk.reserved.store(0, Ordering::Relaxed);
        }
    }

    fn is_reserved(&self, chunk: &Chunk<M>) -> bool {
        chunk.reserved.load(Ordering::Relaxed) == self.epoch.load(Ordering::Relaxed)
    }

    /// Forgets everything about `chunk` (of the region in slot `slot`): its
    /// want, refusal, reservation and reference flag (it died or its region
    /// goes away). A claim stays: its claimant ends it.
    fn forget(&self, slot: usize, chunks: &[Chunk<M>], index: usize) {
        self.clear_flags(slot, chunks, index, WANTED | REFUSED | SHORT | USED);
        if let Some(chunk) = chunks.get(index) {
            self.unreserve(chunk);
        }
    }

    /// No command waits for a rebuild any more: no chunk stays reserved
    /// (a command that failed or was aborted after it reserved chunks left
    /// its reservation behind). A new epoch drops them all at once.
    pub(super) fn clear_reservations(&self) {
        // The engine is the only thread that reserves, and this runs on it:
        // the flag cannot be set again behind the swap.
        if !self.any_reserved.swap(false, Ordering::Relaxed) {
            return;
        }
        // Never 0 (a chunk never reserved), and 64 bits never wrap.
        self.epoch.store(self.epoch.load(Ordering::Relaxed).saturating_add(1), Ordering::Relaxed);
    }

    /// Whether a command waits for chunk `chunk` of `handle`.
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn chunk_wanted(&self, handle: RegionHandle, chunk: usize) -> bool {
        // SAFETY: forwarded contract.
        unsafe { self.chunk_of(handle, chunk) }.is_some_and(|c| c.has(WANTED))
    }

    /// Chunk `chunk` of the live region named by `handle`.
    ///
    /// # Safety
    ///
    /// As for reads, and the borrow must end before the next write.
    unsafe fn chunk_of(&self, handle: RegionHandle, chunk: usize) -> Option<&Chunk<M>> {
        // SAFETY: forwarded contract.
        unsafe { self.entry(handle) }?.live_chunks().get(chunk)
    }
}

impl<M: Mapping, const N: usize> RegionTable<M, N> {
    /// Runs `f` on every live entry with its slot index, in address order
    /// (the index: as many steps as live regions, not slots), until it
    /// returns `Some`.
    ///
    /// # Safety
    ///
    /// No writer may run concurrently: the caller holds `L` or is inside the
    /// gate, and the returned borrow must not outlive that.
    unsafe fn find_entry<'a, R>(&'a self, mut f: impl FnMut(usize, &'a Entry<M>) -> Option<R>) -> Option<R> {
        // SAFETY: forwarded contract.
        for &index in unsafe { self.order() } {
            let index = usize::from(index);
            // SAFETY: forwarded contract.
            if let Some(found) = unsafe { self.entry_at(index) }.and_then(|entry| f(index, entry)) {
                return Some(found);
            }
        }
        None
    }

    /// How many regions are registered.
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn len(&self) -> usize {
        // SAFETY: forwarded contract.
        unsafe { self.order() }.len()
    }

    /// How many chunks the registered regions have, together (one step per
    /// region).
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn chunk_total(&self) -> usize {
        // SAFETY: forwarded contract.
        let order = unsafe { self.order() };
        order
            .iter()
            // SAFETY: forwarded contract.
            .filter_map(|&index| unsafe { self.entry_at(usize::from(index)) })
            .map(|entry| entry.desc.chunk_count())
            .sum()
    }

    /// The live slots, sorted by their region's start.
    ///
    /// # Safety
    ///
    /// As for reads, and the borrow must end before the next write.
    unsafe fn order(&self) -> &[u16] {
        // SAFETY: no concurrent writer by this function's contract, and the
        // caller bounds the borrow.
        let order: &Order<N> = self.order.with(|ptr| unsafe { &*ptr });
        &order.slots[..order.len]
    }

    /// The live entry in slot `index`, if any.
    ///
    /// # Safety
    ///
    /// As for reads, and the borrow must end before the next write.
    unsafe fn entry_at(&self, index: usize) -> Option<&Entry<M>> {
        let cell = self.slots.get(index)?;
        // SAFETY: no concurrent writer by this function's contract, and the
        // caller bounds the borrow.
        let slot: &Slot<M> = cell.with(|ptr| unsafe { &*ptr });
        slot.entry.as_ref()
    }

    /// How many live regions in `order` start before `end` (a binary
    /// search: the regions never overlap, so sorted by start they are
    /// sorted by end too).
    ///
    /// # Safety
    ///
    /// As for reads.
    unsafe fn starting_before(&self, end: u64) -> usize {
        // SAFETY: forwarded contract.
        let order = unsafe { self.order() };
        order.partition_point(|&index| {
            // SAFETY: forwarded contract.
            unsafe { self.entry_at(usize::from(index)) }.is_some_and(|entry| entry.desc.start < end)
        })
    }

    /// The live region that holds address `va`.
    ///
    /// # Safety
    ///
    /// As for reads, and the borrow must end before the next write.
    unsafe fn entry_holding(&self, va: u64) -> Option<&Entry<M>> {
        // SAFETY: forwarded contract.
        let before = unsafe { self.starting_before(va.checked_add(1)?) };
        // SAFETY: forwarded contract.
        let last = *unsafe { self.order() }.get(before.checked_sub(1)?)?;
        // SAFETY: forwarded contract.
        let entry = unsafe { self.entry_at(usize::from(last)) }?;
        (va < entry.desc.end()).then_some(entry)
    }

    /// Adds slot `index` (whose region starts at `start`) to the index.
    ///
    /// # Safety
    ///
    /// As for writes; the slot's entry is live and not in the index yet.
    unsafe fn order_insert(&self, index: usize, start: u64) {
        // SAFETY: forwarded contract.
        let at = unsafe { self.starting_before(start) };
        self.order.with_mut(|ptr| {
            // SAFETY: exclusive access by this function's contract.
            let order = unsafe { &mut *ptr };
            // A slot was free, so the index has room.
            debug_assert!(order.len < N);
            if order.len < N {
                order.slots.copy_within(at..order.len, at + 1);
                // `index < capacity() <= 65536`.
                order.slots[at] = index as u16;
                order.len += 1;
            }
        });
    }

    /// Takes slot `index` out of the index.
    ///
    /// # Safety
    ///
    /// As for writes.
    unsafe fn order_remove(&self, index: usize) {
        self.order.with_mut(|ptr| {
            // SAFETY: exclusive access by this function's contract.
            let order = unsafe { &mut *ptr };
            let len = order.len;
            if let Some(at) = order.slots[..len].iter().position(|&s| usize::from(s) == index) {
                order.slots.copy_within(at + 1..len, at);
                order.len -= 1;
            }
        });
    }

    /// Adds `bytes` to (`mapped`) or takes them from (`!mapped`) the
    /// running sum of mapped bytes.
    ///
    /// # Safety
    ///
    /// As for writes.
    unsafe fn count_mapped(&self, bytes: u64, mapped: bool) {
        self.mapped.with_mut(|ptr| {
            // SAFETY: exclusive access by this function's contract.
            let sum = unsafe { &mut *ptr };
            debug_assert!(mapped || *sum >= bytes, "unmapping more than is mapped");
            *sum = if mapped { sum.saturating_add(bytes) } else { sum.saturating_sub(bytes) };
        });
    }

    /// Runs `f` on the live entry named by `handle`.
    ///
    /// # Safety
    ///
    /// The caller holds `L`, the gate is paused and drained (no reader inside
    /// the gate, no other writer).
    unsafe fn with_entry_mut<R>(&self, handle: RegionHandle, f: impl FnOnce(&mut Entry<M>) -> R) -> Option<R> {
        let cell = self.slots.get(handle.slot())?;
        cell.with_mut(|ptr| {
            // SAFETY: exclusive access by this function's contract.
            let slot = unsafe { &mut *ptr };
            if slot.generation != handle.generation {
                return None;
            }
            slot.entry.as_mut().map(f)
        })
    }

    /// The live entry named by `handle`.
    ///
    /// # Safety
    ///
    /// As for reads, and the borrow must end before the next write.
    unsafe fn entry(&self, handle: RegionHandle) -> Option<&Entry<M>> {
        let cell = self.slots.get(handle.slot())?;
        // SAFETY: no concurrent writer by this function's contract, and the
        // caller bounds the borrow.
        let slot: &Slot<M> = cell.with(|ptr| unsafe { &*ptr });
        if slot.generation != handle.generation {
            return None;
        }
        slot.entry.as_ref()
    }

    /// A copy of the region named by `handle`.
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn info(&self, handle: RegionHandle) -> Option<RegionInfo> {
        // SAFETY: forwarded contract.
        unsafe { self.entry(handle) }.map(Entry::info)
    }

    /// A copy of the live region in slot `slot`, if any.
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn info_at_slot(&self, slot: usize) -> Option<RegionInfo> {
        let cell = self.slots.get(slot)?;
        cell.with(|ptr| {
            // SAFETY: no concurrent writer by this function's contract.
            let slot = unsafe { &*ptr };
            slot.entry.as_ref().map(Entry::info)
        })
    }

    /// The mapping of chunk `chunk` of the region named by `handle`, if it
    /// is mapped.
    ///
    /// # Safety
    ///
    /// As for reads, and the returned borrow must end before the next write.
    pub(super) unsafe fn mapping(&self, handle: RegionHandle, chunk: usize) -> Option<&M> {
        // SAFETY: forwarded contract.
        match &unsafe { self.chunk_of(handle, chunk) }?.state {
            ChunkState::Mapped { mapping, .. } => Some(mapping),
            _ => None,
        }
    }

    /// True if chunk `chunk` of `handle` is armed and unmapped.
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn chunk_unmapped(&self, handle: RegionHandle, chunk: usize) -> bool {
        // SAFETY: forwarded contract.
        let Some(entry) = (unsafe { self.entry(handle) }) else { return false };
        entry.phase == Phase::Armed && entry.live_chunks().get(chunk).is_some_and(Chunk::is_unmapped)
    }

    /// True if some chunk of `handle` in `chunks` is mapped.
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn any_mapped(&self, handle: RegionHandle, chunks: Range<usize>) -> bool {
        // SAFETY: forwarded contract.
        let Some(entry) = (unsafe { self.entry(handle) }) else { return false };
        let live = entry.live_chunks();
        chunks.into_iter().any(|i| live.get(i).is_some_and(Chunk::is_mapped))
    }

    /// True if the queue must stay stale: a region is pending, or a command
    /// waits for a chunk that is still unmapped.
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn any_needing_rebuild(&self) -> bool {
        // SAFETY: forwarded contract.
        unsafe { self.first_wanted() }.is_some()
            // SAFETY: forwarded contract.
            || unsafe { self.find_entry(|_, entry| (entry.phase == Phase::Pending).then_some(())) }.is_some()
    }

    /// The first chunk a command waits for that is armed and unmapped. Want
    /// bits of chunks that are mapped, dead or gone are ignored (they are
    /// cleared when the chunk changes).
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn first_wanted(&self) -> Option<(RegionDesc, usize)> {
        // SAFETY: forwarded contract.
        unsafe { self.first_wanted_except(false) }
    }

    /// As [`Self::first_wanted`], skipping the chunks another rebuild has
    /// claimed ([`Self::claim`]).
    ///
    /// # Safety
    ///
    /// The caller holds `L`.
    pub(super) unsafe fn first_unclaimed_wanted(&self) -> Option<(RegionDesc, usize)> {
        // SAFETY: `L` is held (this function's contract), which covers the
        // reads; the claims are only written under `L`.
        unsafe { self.first_wanted_except(true) }
    }

    /// # Safety
    ///
    /// As for reads.
    unsafe fn first_wanted_except(&self, skip_claimed: bool) -> Option<(RegionDesc, usize)> {
        let skip = if skip_claimed { CLAIMED } else { 0 };
        // SAFETY: forwarded contract.
        unsafe {
            self.find_entry(|index, entry| {
                if entry.phase != Phase::Armed || !self.any_wanted_in(index) {
                    return None;
                }
                let from = self.want_hint[index].load(Ordering::Acquire) as usize;
                entry
                    .live_chunks()
                    .iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, c)| {
                        let flags = c.flags.load(Ordering::Acquire);
                        flags & WANTED != 0 && flags & skip == 0 && c.is_unmapped()
                    })
                    .map(|(i, _)| (entry.desc, i))
            })
        }
    }

    /// A rebuild maps chunk `chunk` of `handle` now: other rebuilds leave it
    /// to it ([`Self::first_unclaimed_wanted`]) until [`Self::unclaim`].
    ///
    /// # Safety
    ///
    /// The caller holds `L`.
    pub(super) unsafe fn claim(&self, handle: RegionHandle, chunk: usize) {
        // SAFETY: `L` is held (this function's contract): reads are allowed.
        if let Some(c) = unsafe { self.chunk_of(handle, chunk) } {
            c.set(CLAIMED);
        }
    }

    /// Ends [`Self::claim`] of chunk `chunk` of `handle`, unless the region
    /// went away (a new region in its slot starts with no claim).
    ///
    /// # Safety
    ///
    /// The caller holds `L`.
    pub(super) unsafe fn unclaim(&self, handle: RegionHandle, chunk: usize) {
        // SAFETY: `L` is held (this function's contract): reads are allowed.
        if let Some(c) = unsafe { self.chunk_of(handle, chunk) } {
            c.clear(CLAIMED);
        }
    }

    /// Finds the region containing `va` and checks the access and the
    /// chunks it touches.
    ///
    /// # Safety
    ///
    /// As for reads, and the returned borrow must end before the next write:
    /// the engine ties it to its gate guard.
    pub(super) unsafe fn translate(&self, va: u64, len: u64, access: Access) -> Result<Translation<'_, M>, XlateFault> {
        // SAFETY: forwarded contract.
        let entry = unsafe { self.entry_holding(va) }.ok_or(XlateFault::NotRegistered)?;
        let desc = &entry.desc;
        let end = match va.checked_add(len) {
            Some(end) if end <= desc.end() => end,
            _ => return Err(XlateFault::CrossesEnd),
        };
        if !desc.access.contains(access) {
            return Err(XlateFault::AccessDenied);
        }
        match entry.phase {
            Phase::Pending => return Err(XlateFault::NotMapped),
            Phase::Dead => return Err(XlateFault::Dead),
            Phase::Armed => {}
        }
        // A zero-length access still needs the chunk it names.
        let chunks = desc.chunks_in(va, end.max(va + 1));
        let touched = &entry.live_chunks()[chunks.clone()];
        let (mut waits, mut refused, mut short) = (false, false, false);
        for chunk in touched {
            match chunk.state {
                ChunkState::Dead => return Err(XlateFault::Dead),
                ChunkState::Unmapped => {
                    waits = true;
                    let flags = chunk.flags.load(Ordering::Acquire);
                    refused |= flags & REFUSED != 0;
                    short |= flags & SHORT != 0;
                }
                // Referenced, whether the command runs now or waits for
                // the rest of its chunks: the clock keeps what it needs
                // mapped.
                ChunkState::Mapped { .. } => chunk.mark_used(),
            }
        }
        // A rebuild this command waited for failed: it fails, once (the
        // next command on the chunk asks again).
        if refused || short {
            // Both kinds at once: this command fails once for all of them.
            for chunk in touched {
                if chunk.is_unmapped() {
                    chunk.clear(REFUSED | SHORT);
                }
                self.unreserve(chunk);
            }
            return Err(if refused { XlateFault::Refused } else { XlateFault::NoMemory });
        }
        if waits {
            touched.iter().for_each(|chunk| self.reserve(chunk));
            let touched = Footprint { region: desc.handle, first: chunks.start as u32, last: chunks.end as u32 - 1 };
            return Err(XlateFault::NeedsRebuild { touched });
        }
        touched.iter().for_each(|chunk| self.unreserve(chunk));
        let offset = va - desc.start;
        match &entry.chunks[chunks.start].state {
            ChunkState::Mapped { seq, mapping } => Ok(Translation {
                region: desc.handle,
                mapping,
                offset,
                seq: *seq,
                chunk_shift: desc.chunk_shift,
                chunks: entry.live_chunks(),
            }),
            // Checked above.
            _ => Err(XlateFault::Dead),
        }
    }

    /// The chunks an access of `len` bytes at `va` would touch, whatever
    /// their state: what the engine compares to decide whether a command
    /// may overtake one that waits for a rebuild (`overtake.rs`). `None` if
    /// no region holds the whole access (the command then fails without
    /// touching memory).
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn footprint(&self, va: u64, len: u64) -> Option<Footprint> {
        // SAFETY: forwarded contract.
        let desc = unsafe { self.entry_holding(va) }?.desc;
        let end = va.checked_add(len).filter(|&end| end <= desc.end())?;
        let chunks = desc.chunks_in(va, end.max(va + 1));
        Some(Footprint { region: desc.handle, first: chunks.start as u32, last: chunks.end as u32 - 1 })
    }

    /// Adds a region as [`Phase::Pending`] with every chunk unmapped, its
    /// chunk states in `chunks` (dropped on error).
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn insert(
        &self,
        start: u64,
        len: u64,
        access: Access,
        chunk_shift: u8,
        chunks: M::Chunks,
    ) -> Result<RegionDesc, RegionError> {
        if len == 0 {
            return Err(RegionError::ZeroLength);
        }
        let end = start.checked_add(len).ok_or(RegionError::Overflow)?;
        if access.is_empty() || Access::from_bits(access.bits()).is_none() {
            return Err(RegionError::InvalidAccess);
        }
        // The region starting last before `end` is the only one that can
        // overlap (see `starting_before`).
        // SAFETY: we are the only writer; reading is covered too.
        let before = unsafe { self.starting_before(end) };
        if let Some(&last) = before.checked_sub(1).and_then(|at| {
            // SAFETY: as above.
            unsafe { self.order() }.get(at)
        }) {
            // SAFETY: as above.
            if let Some(entry) = unsafe { self.entry_at(usize::from(last)) } {
                if entry.desc.overlaps(start, end) {
                    return Err(RegionError::Overlaps(entry.desc.handle));
                }
            }
        }
        let chunk_shift = chunk_shift_for(len, chunk_shift);
        let count = len.div_ceil(1u64 << chunk_shift) as usize;
        if chunks.len() < count || !chunks.iter().all(Chunk::is_pristine) {
            return Err(RegionError::BadChunkStorage);
        }
        let mut chunks = Some(chunks);
        for (index, cell) in self.slots.iter().enumerate().take(self.capacity()) {
            let inserted = cell.with_mut(|ptr| {
                // SAFETY: exclusive access by this function's contract.
                let slot = unsafe { &mut *ptr };
                if slot.entry.is_some() {
                    return None;
                }
                let desc = RegionDesc {
                    handle: RegionHandle {
                        // `index < capacity() <= 65536`.
                        slot: index as u16,
                        generation: slot.generation,
                    },
                    start,
                    len,
                    access,
                    chunk_shift,
                };
                slot.entry = Some(Entry { desc, phase: Phase::Pending, chunks: chunks.take()? });
                Some(desc)
            });
            if let Some(desc) = inserted {
                // Its chunks are pristine (checked above): none is wanted.
                self.wanting[index].store(0, Ordering::Release);
                self.want_hint[index].store(0, Ordering::Release);
                // SAFETY: forwarded contract; the slot was just filled.
                unsafe { self.order_insert(index, start) };
                return Ok(desc);
            }
        }
        Err(RegionError::TableFull)
    }

    /// Pending → Armed: the region's notifier is armed, its chunks may be
    /// mapped; every chunk is wanted (REGISTER maps the whole region).
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn arm(&self, handle: RegionHandle) -> Result<(), RegionError> {
        // SAFETY: forwarded contract.
        let result = unsafe {
            self.with_entry_mut(handle, |entry| match entry.phase {
                Phase::Pending => {
                    entry.phase = Phase::Armed;
                    // An UNMAP while it was pending (its notifier is
                    // inserted before the arm, without `L`) may have
                    // killed chunks: a wanted chunk is always unmapped.
                    for (i, chunk) in entry.live_chunks().iter().enumerate() {
                        if chunk.is_unmapped() {
                            self.want_chunk(handle.slot(), i, chunk);
                        }
                    }
                    Ok(())
                }
                _ => Err(RegionError::InvalidState),
            })
        };
        result.unwrap_or(Err(RegionError::NoSuchRegion))
    }

    /// Removes a region; `unmap` gets each chunk mapping that was mapped.
    /// Returns its description and the pages that were mapped. Bumps the slot
    /// generation.
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn remove(
        &self,
        handle: RegionHandle,
        mut unmap: impl FnMut(&RegionDesc, M),
    ) -> Result<(RegionDesc, u64), RegionError> {
        let cell = self.slots.get(handle.slot()).ok_or(RegionError::NoSuchRegion)?;
        let entry = cell.with_mut(|ptr| {
            // SAFETY: exclusive access by this function's contract.
            let slot = unsafe { &mut *ptr };
            if slot.generation != handle.generation {
                return Err(RegionError::NoSuchRegion);
            }
            let entry = slot.entry.take().ok_or(RegionError::NoSuchRegion)?;
            // Never 0, so a raw handle of 0 is never valid.
            slot.generation = match slot.generation.wrapping_add(1) {
                0 => 1,
                next => next,
            };
            Ok(entry)
        })?;
        // Its chunks go with it, flags and all.
        self.wanting[handle.slot()].store(0, Ordering::Release);
        self.want_hint[handle.slot()].store(0, Ordering::Release);
        // SAFETY: forwarded contract.
        unsafe { self.order_remove(handle.slot()) };
        let mut entry = entry;
        let desc = entry.desc;
        let mut pages = 0u64;
        for (i, chunk) in entry.chunks.iter_mut().take(desc.chunk_count()).enumerate() {
            if let ChunkState::Mapped { mapping, .. } = core::mem::replace(&mut chunk.state, ChunkState::Unmapped) {
                pages = pages.saturating_add(mapping.page_count());
                // SAFETY: forwarded contract.
                unsafe { self.count_mapped(desc.chunk_range(i).1, false) };
                unmap(&desc, mapping);
            }
        }
        Ok((desc, pages))
    }

    /// Unmapped → Mapped for one chunk, and its wanted flag cleared. Gives the
    /// mapping back if the region is gone or the chunk no longer unmapped
    /// (another rebuild won, or it died meanwhile).
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn publish(&self, handle: RegionHandle, chunk: usize, seq: u64, mapping: M) -> Result<u64, M> {
        let mut mapping = Some(mapping);
        // SAFETY: forwarded contract.
        let published = unsafe {
            self.with_entry_mut(handle, |entry| {
                if entry.phase != Phase::Armed || chunk >= entry.desc.chunk_count() {
                    return None;
                }
                if !entry.chunks[chunk].is_unmapped() {
                    return None;
                }
                let mapping = mapping.take()?;
                let pages = mapping.page_count();
                entry.chunks[chunk].state = ChunkState::Mapped { seq, mapping };
                self.clear_flags(handle.slot(), entry.live_chunks(), chunk, WANTED | REFUSED | SHORT);
                // A fresh chunk gets a lap of the clock before it can go.
                entry.chunks[chunk].mark_used();
                // Inside the `unsafe` block above (forwarded contract).
                self.count_mapped(entry.desc.chunk_range(chunk).1, true);
                Some(pages)
            })
        };
        match (published.flatten(), mapping) {
            (Some(pages), _) => {
                self.note_resolved();
                Ok(pages)
            }
            (None, Some(mapping)) => Err(mapping),
            // `mapping` is only taken on the success path.
            (None, None) => Ok(0),
        }
    }

    /// Mapped → Unmapped for the chunks of `handle` in `chunks`; `unmap`
    /// gets each mapping. With `kill` every one of those chunks becomes Dead
    /// instead, mapped or not, in either phase, and its flags are cleared:
    /// what an `UNMAP` does (the mapping the region was registered on is
    /// gone; a later mapping at the same address is not the registration's).
    /// Returns the pages unmapped.
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn take_chunks(
        &self,
        handle: RegionHandle,
        chunks: Range<usize>,
        kill: bool,
        mut unmap: impl FnMut(&RegionDesc, M),
    ) -> u64 {
        let mut killed = false;
        // SAFETY: forwarded contract.
        let taken = unsafe {
            self.with_entry_mut(handle, |entry| {
                let mut pages = 0u64;
                let count = entry.desc.chunk_count();
                for i in chunks.start..chunks.end.min(count) {
                    let next = match entry.chunks[i].state {
                        ChunkState::Dead => continue,
                        _ if kill => ChunkState::Dead,
                        ChunkState::Mapped { .. } => ChunkState::Unmapped,
                        ChunkState::Unmapped => continue,
                    };
                    if kill {
                        killed = true;
                        self.forget(handle.slot(), entry.live_chunks(), i);
                    }
                    if let ChunkState::Mapped { mapping, .. } = core::mem::replace(&mut entry.chunks[i].state, next) {
                        pages = pages.saturating_add(mapping.page_count());
                        // Inside the `unsafe` block above (forwarded contract).
                        self.count_mapped(entry.desc.chunk_range(i).1, false);
                        unmap(&entry.desc, mapping);
                    }
                }
                pages
            })
        };
        if killed {
            self.note_resolved();
        }
        taken.unwrap_or(0)
    }

    /// True if some chunk of `handle` in `chunks` is not dead (an `UNMAP`
    /// over them has something to kill).
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn any_alive(&self, handle: RegionHandle, chunks: Range<usize>) -> bool {
        // SAFETY: forwarded contract.
        let Some(entry) = (unsafe { self.entry(handle) }) else { return false };
        let count = entry.desc.chunk_count();
        (chunks.start..chunks.end.min(count)).any(|i| !matches!(entry.chunks[i].state, ChunkState::Dead))
    }

    /// Bytes of user memory in mapped chunks, over all regions: what the
    /// queue holds of the device's address window.
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn mapped_bytes(&self) -> u64 {
        // SAFETY: no concurrent writer by this function's contract.
        self.mapped.with(|ptr| unsafe { *ptr })
    }

    /// Checks what the writers keep beside the slots: the translation
    /// index (sorted, disjoint, exactly the live slots) and the running sum
    /// of mapped bytes. For the tests.
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn audit(&self) -> Result<(), &'static str> {
        // SAFETY: forwarded contract.
        let order = unsafe { self.order() };
        let mut previous_end = 0u64;
        for &index in order {
            // SAFETY: forwarded contract.
            let entry = unsafe { self.entry_at(usize::from(index)) }.ok_or("an empty slot in the index")?;
            if entry.desc.start < previous_end {
                return Err("the index is not sorted, or regions overlap");
            }
            previous_end = entry.desc.end();
        }
        // Every slot, not the index: what the index may have missed.
        let (mut live, mut bytes) = (0usize, 0u64);
        for index in 0..self.capacity() {
            // SAFETY: forwarded contract.
            let Some(entry) = (unsafe { self.entry_at(index) }) else { continue };
            live += 1;
            let mut wanted = 0u32;
            let hint = self.want_hint[index].load(Ordering::Acquire) as usize;
            for (i, chunk) in entry.live_chunks().iter().enumerate() {
                if i < hint && chunk.has(WANTED) {
                    return Err("a chunk below the slot's search hint is wanted");
                }
                if chunk.is_mapped() {
                    bytes += entry.desc.chunk_range(i).1;
                }
                if chunk.has(WANTED) {
                    if !chunk.is_unmapped() {
                        return Err("a chunk is wanted but not unmapped");
                    }
                    wanted += 1;
                }
            }
            if wanted != self.wanting[index].load(Ordering::Acquire) {
                return Err("a slot's count of wanted chunks is off");
            }
        }
        if live != order.len() {
            return Err("the index misses a live slot");
        }
        // SAFETY: forwarded contract.
        if bytes != unsafe { self.mapped_bytes() } {
            return Err("the running sum of mapped bytes is off");
        }
        Ok(())
    }

    /// Evicts one mapped chunk by the clock (see the module docs): Mapped →
    /// Unmapped, its mapping to `unmap`. A chunk a command waits for is
    /// never taken. It stops after passing the slot it started in three
    /// times (it may start inside it; the first lap may only clear reference
    /// bits); a reserved chunk is never taken either. Returns the bytes
    /// freed, `None` if nothing can go.
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn evict_one(&self, mut unmap: impl FnMut(&RegionDesc, M)) -> Option<u64> {
        let capacity = self.capacity();
        if capacity == 0 {
            return None;
        }
        let hand = self.hand.load(Ordering::Relaxed);
        let first_slot = (hand >> 32) as usize % capacity;
        let (mut slot, mut chunk) = (first_slot, (hand & u64::from(u32::MAX)) as usize);
        // Three passes over the first slot: the hand may start inside it,
        // and a chunk is taken on its second visit at the earliest.
        let mut passes = 0;
        loop {
            let evicted = self.slots[slot].with_mut(|ptr| {
                // SAFETY: exclusive access by this function's contract.
                let slot_ref = unsafe { &mut *ptr };
                let entry = slot_ref.entry.as_mut().filter(|entry| entry.phase == Phase::Armed)?;
                let count = entry.desc.chunk_count();
                while chunk < count {
                    let candidate = &entry.chunks[chunk];
                    // Wanted chunks are unmapped; reserved ones stay.
                    if candidate.is_mapped() && !self.is_reserved(candidate) && candidate.clear(USED) == 0 {
                        let ChunkState::Mapped { mapping, .. } =
                            core::mem::replace(&mut entry.chunks[chunk].state, ChunkState::Unmapped)
                        else {
                            return None;
                        };
                        unmap(&entry.desc, mapping);
                        return Some((chunk, entry.desc.chunk_range(chunk).1));
                    }
                    chunk += 1;
                }
                None
            });
            if let Some((taken, bytes)) = evicted {
                // SAFETY: forwarded contract.
                unsafe { self.count_mapped(bytes, false) };
                self.hand.store(((slot as u64) << 32) | (taken as u64 + 1), Ordering::Relaxed);
                return Some(bytes);
            }
            chunk = 0;
            slot = (slot + 1) % capacity;
            if slot == first_slot {
                passes += 1;
                if passes == 3 {
                    return None;
                }
            }
        }
    }

    /// A wanted, unmapped chunk whose rebuild failed this time (`why`): no
    /// longer wanted, and refused (or short), so the engine fails the
    /// command that waited for it (see the module docs). The chunk stays
    /// unmapped. False if the region is gone, the chunk is not unmapped or
    /// nobody waits for it any more.
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn refuse(&self, handle: RegionHandle, chunk: usize, why: Refusal) -> bool {
        // SAFETY: forwarded contract (reads are covered by the writer's).
        let Some(entry) = (unsafe { self.entry(handle) }) else { return false };
        let live = entry.live_chunks();
        let waited_for =
            entry.phase == Phase::Armed && live.get(chunk).is_some_and(|c| c.is_unmapped() && c.has(WANTED));
        if !waited_for {
            return false;
        }
        live[chunk].set(match why {
            Refusal::Gone => REFUSED,
            Refusal::NoMemory => SHORT,
        });
        self.clear_flags(handle.slot(), live, chunk, WANTED);
        self.note_resolved();
        true
    }

    /// Every live region → Dead; `unmap` gets each chunk mapping that was
    /// mapped. Returns the number of live regions.
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn kill_all(&self, mut unmap: impl FnMut(&RegionDesc, M)) -> u32 {
        let mut live = 0u32;
        for (index, cell) in self.slots.iter().enumerate().take(self.capacity()) {
            cell.with_mut(|ptr| {
                // SAFETY: exclusive access by this function's contract.
                let slot = unsafe { &mut *ptr };
                let Some(entry) = slot.entry.as_mut() else { return };
                live = live.saturating_add(1);
                entry.phase = Phase::Dead;
                let count = entry.desc.chunk_count();
                for i in 0..count {
                    self.forget(index, entry.live_chunks(), i);
                }
                for (i, chunk) in entry.chunks.iter_mut().take(count).enumerate() {
                    if let ChunkState::Mapped { mapping, .. } = core::mem::replace(&mut chunk.state, ChunkState::Dead) {
                        // SAFETY: forwarded contract.
                        unsafe { self.count_mapped(entry.desc.chunk_range(i).1, false) };
                        unmap(&entry.desc, mapping);
                    }
                }
            });
        }
        live
    }
}
