// SPDX-License-Identifier: GPL-2.0

//! One mm context ([`MmContext`]: its queue gate and region table) and the
//! per-device-file directory of contexts keyed by mm ([`ContextTable`]).
//!
//! # The context lock `L`
//!
//! `L` is the caller's lock (the kernel's `Mutex`, a loom or std mutex in
//! tests). It guards a [`LockKey`], which [`MmContext::new`] hands out
//! together with the context: holding `&mut LockKey` is the proof that `L`
//! is held. Each operation checks that the key belongs to the context.
//! [`ContextLock`] lets the functions that must drop and retake `L` (the
//! rebuild's retry loop, the invalidation's trylock) do so. What may run
//! under `L`, and its place among the driver's locks: the lock-order table
//! at the top of `driver/queue.rs`.

use core::ops::DerefMut;

use super::gate::{DrainOutcome, Drained, GateGuard, Paused, QueueGate};
use super::platform::{Mapping, Platform, Waiter};
use super::policy::Policy;
use super::region::{Access, RegionDesc, RegionError, RegionHandle, RegionInfo, RegionTable, Translation, XlateFault};

/// Tunables shared by the operations (module parameters in the driver).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Invalidation policy.
    pub policy: Policy,
    /// How long an invalidation waits for the engine before resetting the
    /// queue; also how long register/unregister/rebuild wait before
    /// reporting [`RegionError::Busy`].
    pub drain_timeout_ns: u64,
    /// Collisions (`mmu_interval_read_retry()` true, or a lost race) a rebuild
    /// absorbs before giving up.
    pub max_retries: u32,
    /// Preferred chunk size as a shift (a region gets larger chunks only if
    /// it would have more than [`MAX_CHUNKS`](super::region::MAX_CHUNKS)).
    pub chunk_shift: u8,
    /// Bytes of mapped chunks the context may hold at once (its share of
    /// the device's address window); 0 for no limit. A rebuild over it
    /// evicts chunks first (`RegionTable::evict_one`).
    pub device_share: u64,
}

impl Config {
    /// Strict policy, 1 s drain timeout, 8 retries, 2 MiB chunks, no share
    /// limit.
    pub const DEFAULT: Config = Config {
        policy: Policy::Strict,
        drain_timeout_ns: 1_000_000_000,
        max_retries: 8,
        chunk_shift: 21,
        device_share: 0,
    };
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The value stored inside the context lock `L`; `&mut LockKey` proves `L`
/// is held. Created only by [`MmContext::new`].
#[derive(Debug)]
pub struct LockKey {
    serial: u64,
}

/// A lock guarding a [`LockKey`] (implemented by the driver for its mutex,
/// by the tests for loom's and std's).
pub trait ContextLock {
    /// The guard; dereferences to the key.
    type Guard<'a>: DerefMut<Target = LockKey>
    where
        Self: 'a;

    /// Takes the lock (may sleep).
    fn lock(&self) -> Self::Guard<'_>;

    /// Takes the lock if free; never sleeps.
    fn try_lock(&self) -> Option<Self::Guard<'_>>;
}

/// How a bounded drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainReport {
    /// The engine left within the timeout (or was not inside).
    Drained,
    /// The engine did not leave in time: the queue was reset, `abandoned`
    /// entries were abandoned (complete their commands with an error), and
    /// the call then waited for the engine to physically leave.
    Reset {
        /// Entries abandoned.
        abandoned: u32,
        /// The gate's new generation.
        generation: u16,
    },
}

/// What [`MmContext::unregister`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnregisterReport {
    /// The removed region.
    pub desc: RegionDesc,
    /// Pages unpinned (0 if it was not mapped).
    pub pages_unpinned: u64,
}

/// What [`MmContext::release`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleaseReport {
    /// Regions that were live (all are dead now).
    pub regions: u32,
    /// Pages unpinned.
    pub pages_unpinned: u64,
    /// How the drain ended.
    pub drain: DrainReport,
}

/// Why [`MmContext::release`] did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseError {
    /// The lock key belongs to another context.
    WrongLock,
    /// Released before (exactly one release does the work).
    AlreadyReleased,
}

// Identity for binding a `LockKey` to its context. Not protocol state, so
// not a loom atomic (loom atomics cannot live in a static either).
static NEXT_SERIAL: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

/// What [`MmContext::register`] registers: `[start, start + len)` with
/// `access`, its chunk states in `chunks` (allocated by the caller before it
/// took `L`: see [`Mapping::Chunks`]).
pub struct RegionRequest<M: Mapping> {
    /// The first byte.
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
    /// What the device may do with it.
    pub access: Access,
    /// Its chunk states: at least
    /// [`chunk_count_for`](super::region::chunk_count_for)`(len,
    /// config.chunk_shift)`, every one unmapped.
    pub chunks: M::Chunks,
}

/// The state of one (device file, mm) pair: its queue gate and regions.
///
/// `M` is the platform's mapping type, `N` the region capacity.
pub struct MmContext<M: Mapping, const N: usize> {
    mm: usize,
    serial: u64,
    gate: QueueGate,
    regions: RegionTable<M, N>,
}

impl<M: Mapping, const N: usize> MmContext<M, N> {
    /// A context for the mm identified by `mm` (the `mm_struct` address,
    /// held with `mmgrab()` for the context's lifetime), with the key to put
    /// in its lock `L`. The queue starts running with no region.
    pub fn new(mm: usize) -> (Self, LockKey) {
        let serial = NEXT_SERIAL.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        (Self { mm, serial, gate: QueueGate::new(), regions: RegionTable::new() }, LockKey { serial })
    }

    /// As [`MmContext::new`], but writes the context at `slot` instead of
    /// returning it: the table holds a slot per region it can hold (tens of
    /// KiB in the driver), too much to pass through a kernel stack.
    ///
    /// # Safety
    ///
    /// `slot` is valid for writes of `Self` and properly aligned; whatever
    /// it held is overwritten without being dropped.
    pub unsafe fn init_in_place(slot: *mut Self, mm: usize) -> LockKey {
        let serial = NEXT_SERIAL.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        // SAFETY: `slot` is valid for writes and aligned (this function's
        // contract), so are its fields; each is written exactly once.
        unsafe {
            core::ptr::addr_of_mut!((*slot).mm).write(mm);
            core::ptr::addr_of_mut!((*slot).serial).write(serial);
            core::ptr::addr_of_mut!((*slot).gate).write(QueueGate::new());
            RegionTable::init_in_place(core::ptr::addr_of_mut!((*slot).regions));
        }
        LockKey { serial }
    }

    /// The mm this context belongs to.
    pub fn mm(&self) -> usize {
        self.mm
    }

    /// How many times a chunk was published, refused or killed: set-aside
    /// commands are worth a retry when this moved (`overtake.rs`).
    pub fn chunks_resolved(&self) -> u64 {
        self.regions.resolved()
    }

    /// The queue gate.
    pub fn gate(&self) -> &QueueGate {
        &self.gate
    }

    /// True once released.
    pub fn is_released(&self) -> bool {
        self.gate.is_closed()
    }

    /// True if `key` is this context's lock key.
    pub fn owns_key(&self, key: &LockKey) -> bool {
        key.serial == self.serial
    }

    /// Called by the engine before it executes a command; `None` while the
    /// queue is paused or released (a stale queue admits it: each
    /// translation checks its chunks). Region lookups go through the
    /// returned guard.
    pub fn enter<'a, W: Waiter + ?Sized>(&'a self, waiter: &'a W) -> Option<EngineGuard<'a, M, N, W>> {
        Some(EngineGuard { gate: self.gate.enter(waiter)?, regions: &self.regions })
    }

    /// A copy of one region (caller holds `L`).
    pub fn region(&self, key: &LockKey, handle: RegionHandle) -> Result<RegionInfo, RegionError> {
        if !self.owns_key(key) {
            return Err(RegionError::WrongLock);
        }
        // SAFETY: `key` proves `L` is held, so no writer runs concurrently.
        unsafe { self.regions.info(handle) }.ok_or(RegionError::NoSuchRegion)
    }

    /// The mapping of chunk `chunk` of a region, if mapped (caller holds
    /// `L`; borrowing the key keeps every writer out while the mapping is
    /// borrowed).
    pub fn mapping<'a>(&'a self, key: &'a LockKey, handle: RegionHandle, chunk: usize) -> Option<&'a M> {
        if !self.owns_key(key) {
            return None;
        }
        // SAFETY: `key` proves `L` is held and is borrowed as long as the
        // result, and every writer needs `&mut` of that key.
        unsafe { self.regions.mapping(handle, chunk) }
    }

    /// Copies of all live regions, in slot order (caller holds `L`). Empty
    /// if `key` is not this context's.
    pub fn regions<'a>(&'a self, key: &'a LockKey) -> Regions<'a, M, N> {
        self.regions_from(key, 0)
    }

    /// As [`MmContext::regions`], from slot `first_slot` on (a caller that
    /// copies a few at a time resumes after the last slot it saw).
    pub fn regions_from<'a>(&'a self, key: &'a LockKey, first_slot: usize) -> Regions<'a, M, N> {
        Regions { regions: &self.regions, next: if self.owns_key(key) { first_slot } else { N }, _key: key }
    }

    /// How many regions are registered (caller holds `L`; 0 if `key` is not
    /// this context's).
    pub fn region_count(&self, key: &LockKey) -> usize {
        if !self.owns_key(key) {
            return 0;
        }
        // SAFETY: `key` proves `L` is held, so no writer runs concurrently.
        unsafe { self.regions.len() }
    }

    /// True if some region is pending, or a command waits for an unmapped
    /// chunk (caller holds `L`).
    pub fn needs_rebuild(&self, key: &LockKey) -> bool {
        // SAFETY: `key` proves `L` is held, so no writer runs concurrently.
        self.owns_key(key) && unsafe { self.regions.any_needing_rebuild() }
    }

    /// For the zap worker: true if the queue's user mapping should be zapped
    /// (the queue is stale: a command waits for a rebuild, so the next touch
    /// of the ring must fault and rebuild).
    pub fn zap_needed(&self) -> bool {
        self.gate.is_stale()
    }

    /// For the fault handler, after it mapped the queue page: if the queue
    /// went stale again meanwhile, the zap that teardown scheduled may have
    /// run before the page was mapped, so queue another one. (The page-table
    /// lock orders the insert against the zap; this re-check closes the
    /// window between the rebuild and the insert.)
    pub fn ring_mapped<P: Platform>(&self, platform: &P) {
        if self.gate.is_stale() {
            platform.schedule_zap();
        }
    }

    /// Registers `request` (caller holds `L`).
    ///
    /// The region starts [`Pending`](RegionState::Pending) and the queue
    /// stale. Then, without `L`: insert the interval notifier, call
    /// [`MmContext::arm`], then [`rebuild`](super::rebuild::rebuild).
    pub fn register<P: Platform<Mapping = M>>(
        &self,
        key: &mut LockKey,
        platform: &P,
        config: &Config,
        request: RegionRequest<M>,
    ) -> Result<RegionDesc, RegionError> {
        self.check_writable(key)?;
        let paused = self.gate.pause();
        let drained = Self::drain_bounded(&paused, platform, config)?;
        let RegionRequest { start, len, access, chunks } = request;
        // SAFETY: `key` proves `L` is held and `drained` that the gate is
        // paused and drained.
        let desc = unsafe { self.regions.insert(start, len, access, config.chunk_shift, chunks) }?;
        paused.mark_stale(&drained);
        Ok(desc)
    }

    /// Pending → Armed, once the region's interval notifier is inserted
    /// (caller holds `L`). Until then no rebuild maps it; from then on
    /// every chunk is wanted, so the next rebuild maps the whole region.
    pub fn arm<P: Platform<Mapping = M>>(
        &self,
        key: &mut LockKey,
        platform: &P,
        config: &Config,
        handle: RegionHandle,
    ) -> Result<(), RegionError> {
        self.check_writable(key)?;
        let paused = self.gate.pause();
        let _drained = Self::drain_bounded(&paused, platform, config)?;
        // SAFETY: `key` proves `L` is held and `_drained` that the gate is
        // paused and drained.
        unsafe { self.regions.arm(handle) }
    }

    /// Removes a region, unpinning it if mapped (caller holds `L`). Remove
    /// its interval notifier afterwards, without `L` (removal waits for
    /// running callbacks, which take `L`).
    pub fn unregister<P: Platform<Mapping = M>>(
        &self,
        key: &mut LockKey,
        platform: &P,
        config: &Config,
        handle: RegionHandle,
    ) -> Result<UnregisterReport, RegionError> {
        self.remove(key, platform, config, handle, false)
    }

    /// As [`Self::unregister`], but never [`RegionError::Busy`]: after
    /// `drain_timeout_ns` the queue is reset, as an invalidation's drain is
    /// (the engine's commands are abandoned). For an undo that must not
    /// fail: a REGISTER that failed leaves nothing registered.
    pub fn unregister_or_reset<P: Platform<Mapping = M>>(
        &self,
        key: &mut LockKey,
        platform: &P,
        config: &Config,
        handle: RegionHandle,
    ) -> Result<UnregisterReport, RegionError> {
        self.remove(key, platform, config, handle, true)
    }

    fn remove<P: Platform<Mapping = M>>(
        &self,
        key: &mut LockKey,
        platform: &P,
        config: &Config,
        handle: RegionHandle,
        reset_on_timeout: bool,
    ) -> Result<UnregisterReport, RegionError> {
        if !self.owns_key(key) {
            return Err(RegionError::WrongLock);
        }
        let paused = self.gate.pause();
        let drained = if reset_on_timeout {
            self.drain_or_reset(&paused, platform, config).0
        } else {
            Self::drain_bounded(&paused, platform, config)?
        };
        // SAFETY: `key` proves `L` is held and `drained` that the gate is
        // paused and drained.
        let (desc, pages_unpinned) = unsafe {
            self.regions.remove(handle, |desc, mapping| platform.unmap_and_unpin(mapping, desc.access.device_writes()))
        }?;
        if !self.is_released() {
            // SAFETY: as above.
            unsafe { self.refresh_stale(&paused, &drained) };
        }
        Ok(UnregisterReport { desc, pages_unpinned })
    }

    /// Releases the context (the mm exits, or the file is closed): drains
    /// the queue (resetting it after the timeout), unpins every region, marks
    /// them all dead and closes the gate for good. Exactly one call does the
    /// work; later ones return [`ReleaseError::AlreadyReleased`].
    ///
    /// Afterwards, without `L`: remove the interval notifiers, stop the
    /// engine, complete queued commands with an error, reap the directory
    /// entry and `mmdrop()`.
    pub fn release<P: Platform<Mapping = M>>(
        &self,
        key: &mut LockKey,
        platform: &P,
        config: &Config,
    ) -> Result<ReleaseReport, ReleaseError> {
        if !self.owns_key(key) {
            return Err(ReleaseError::WrongLock);
        }
        if self.is_released() {
            return Err(ReleaseError::AlreadyReleased);
        }
        let paused = self.gate.pause();
        let (drained, drain) = self.drain_or_reset(&paused, platform, config);
        let mut pages_unpinned = 0u64;
        // SAFETY: `key` proves `L` is held and `drained` that the gate is
        // paused and drained.
        let regions = unsafe {
            self.regions.kill_all(|desc: &RegionDesc, mapping| {
                pages_unpinned = pages_unpinned.saturating_add(mapping.page_count());
                platform.unmap_and_unpin(mapping, desc.access.device_writes());
            })
        };
        paused.close(&drained);
        Ok(ReleaseReport { regions, pages_unpinned, drain })
    }

    fn check_writable(&self, key: &LockKey) -> Result<(), RegionError> {
        if !self.owns_key(key) {
            Err(RegionError::WrongLock)
        } else if self.is_released() {
            Err(RegionError::Released)
        } else {
            Ok(())
        }
    }

    /// The engine has no command waiting for a rebuild (none set aside):
    /// forget every chunk reservation, so that the device-address share
    /// can evict those chunks again (`region.rs`, *Device addresses on
    /// demand*). Only the engine reserves chunks, so only the engine calls
    /// this, between commands.
    pub fn no_command_waits(&self) {
        self.regions.clear_reservations();
    }

    /// Checks what the region table keeps beside its slots (the translation
    /// index, the sum of mapped bytes; caller holds `L`). For the tests.
    pub fn audit(&self, key: &LockKey) -> Result<(), &'static str> {
        if !self.owns_key(key) {
            return Err("not this context's key");
        }
        // SAFETY: `key` proves `L` is held, so no writer runs concurrently.
        unsafe { self.regions.audit() }
    }

    /// The region table, for the sibling modules (teardown, rebuild).
    pub(super) fn table(&self) -> &RegionTable<M, N> {
        &self.regions
    }

    /// Waits for the drain at most `drain_timeout_ns`; [`RegionError::Busy`]
    /// on timeout (nothing was changed).
    pub(super) fn drain_bounded<'p, W: Waiter + ?Sized>(
        paused: &'p Paused<'_>,
        waiter: &W,
        config: &Config,
    ) -> Result<Drained<'p>, RegionError> {
        match paused.wait_drained(waiter, config.drain_timeout_ns) {
            DrainOutcome::Drained(drained) => Ok(drained),
            DrainOutcome::TimedOut { .. } => Err(RegionError::Busy),
        }
    }

    /// Waits for the drain; after `drain_timeout_ns` resets the gate (the
    /// engine's entries are abandoned and their results void), tells the
    /// platform, and waits for the engine to physically leave, without a
    /// deadline: the engine may still be reading the region table, which is
    /// about to change, so returning earlier would be a use-after-unpin.
    pub(super) fn drain_or_reset<'p, P: Platform>(
        &self,
        paused: &'p Paused<'_>,
        platform: &P,
        config: &Config,
    ) -> (Drained<'p>, DrainReport) {
        let start = platform.now_ns();
        platform.drain_started(self.gate().snapshot().in_flight, config.drain_timeout_ns);
        let reset = match paused.wait_drained(platform, config.drain_timeout_ns) {
            DrainOutcome::Drained(drained) => {
                platform.drain_finished(0, platform.now_ns().saturating_sub(start));
                return (drained, DrainReport::Drained);
            }
            DrainOutcome::TimedOut { .. } => paused.reset(),
        };
        platform.engine_reset();
        loop {
            if let DrainOutcome::Drained(drained) = paused.wait_drained(platform, u64::MAX) {
                platform.drain_finished(reset.abandoned, platform.now_ns().saturating_sub(start));
                return (drained, DrainReport::Reset { abandoned: reset.abandoned, generation: reset.generation });
            }
        }
    }

    /// Keeps the stale flag equal to "a region is pending or a command waits
    /// for an unmapped chunk".
    ///
    /// # Safety
    ///
    /// The caller holds `L`; `drained` is about this context's gate.
    pub(super) unsafe fn refresh_stale(&self, paused: &Paused<'_>, drained: &Drained<'_>) {
        // SAFETY: `L` is held (this function's contract).
        if unsafe { self.regions.any_needing_rebuild() } {
            paused.mark_stale(drained);
        } else {
            paused.clear_stale(drained);
        }
    }
}

/// Iterator over copies of a context's live regions; see
/// [`MmContext::regions`].
pub struct Regions<'a, M: Mapping, const N: usize> {
    regions: &'a RegionTable<M, N>,
    next: usize,
    _key: &'a LockKey,
}

impl<M: Mapping, const N: usize> Iterator for Regions<'_, M, N> {
    type Item = RegionInfo;

    fn next(&mut self) -> Option<RegionInfo> {
        while self.next < N {
            let slot = self.next;
            self.next += 1;
            // SAFETY: `_key` (checked in `MmContext::regions`) proves `L` is
            // held for the iterator's lifetime, so no writer runs.
            if let Some(info) = unsafe { self.regions.info_at_slot(slot) } {
                return Some(info);
            }
        }
        None
    }
}

/// The engine's access to a context while inside its gate.
///
/// Translations borrow the guard: the region table cannot change until the
/// guard is dropped or finished.
pub struct EngineGuard<'a, M: Mapping, const N: usize, W: Waiter + ?Sized> {
    gate: GateGuard<'a, W>,
    regions: &'a RegionTable<M, N>,
}

impl<M: Mapping, const N: usize, W: Waiter + ?Sized> EngineGuard<'_, M, N, W> {
    /// Translates a device access of `len` bytes at user address `va`.
    pub fn translate(&self, va: u64, len: u64, access: Access) -> Result<Translation<'_, M>, XlateFault> {
        // SAFETY: the engine is inside the gate (`self.gate`), so no writer
        // runs until the guard is gone; the translation borrows `self`.
        unsafe { self.regions.translate(va, len, access) }
    }

    /// The chunks an access would touch, mapped or not
    /// ([`Footprint`](super::region::Footprint)); `None` if no region holds
    /// it.
    pub fn footprint(&self, va: u64, len: u64) -> Option<super::region::Footprint> {
        // SAFETY: the engine is inside the gate (`self.gate`): no writer runs.
        unsafe { self.regions.footprint(va, len) }
    }

    /// The command needs chunks that are unmapped
    /// ([`XlateFault::NeedsRebuild`]): marks those of `touched` wanted,
    /// marks the queue stale (a rebuild is wanted) and leaves. The
    /// command stays queued (set aside: `overtake.rs`); the caller then
    /// schedules the rebuild worker or the zap
    /// ([`Platform::schedule_zap`](super::platform::Platform::schedule_zap))
    /// so that the owner's next touch of the ring faults and rebuilds, and
    /// wakes the waiters (a WAIT rebuilds too).
    pub fn request_rebuild(self, touched: super::region::Footprint) -> super::gate::EngineExit {
        // SAFETY: the engine is inside the gate (`self.gate`): no writer runs.
        unsafe { self.regions.want(touched) };
        self.gate.mark_stale();
        self.gate.finish()
    }

    /// The gate generation this entry belongs to.
    pub fn generation(&self) -> u16 {
        self.gate.generation()
    }

    /// True if a reset abandoned this entry: stop touching memory and leave.
    pub fn is_abandoned(&self) -> bool {
        self.gate.is_abandoned()
    }

    /// Leaves the gate; tells whether the engine still owns the command's
    /// completion ([`EngineExit`](super::gate::EngineExit)).
    pub fn finish(self) -> super::gate::EngineExit {
        self.gate.finish()
    }
}

/// Names one context in a [`ContextTable`]: slot plus generation, so an id
/// of a reaped context never names the context that reuses its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContextId {
    slot: u16,
    generation: u32,
}

impl ContextId {
    /// Slot index (for the caller's per-slot storage).
    pub const fn slot(self) -> usize {
        self.slot as usize
    }

    /// Slot generation.
    pub const fn generation(self) -> u32 {
        self.generation
    }
}

/// Result of [`ContextTable::lookup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The mm has a live context.
    Live(ContextId),
    /// The mm's context was released and not reaped yet.
    Released(ContextId),
    /// No context for this mm.
    Absent,
}

/// Why [`ContextTable::get_or_create`] gave no context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateError {
    /// `mm` is 0.
    InvalidMm,
    /// The mm's context was released; it is never handed out again.
    Released(ContextId),
    /// Every slot is in use.
    Full,
}

/// Result of [`ContextTable::release`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// This call released it: the caller does the teardown
    /// ([`MmContext::release`]).
    Released(ContextId),
    /// Another call released it already: nothing to do.
    AlreadyReleased(ContextId),
    /// No context for this mm.
    NotFound,
}

/// Why [`ContextTable::reap`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReapError {
    /// No such context (stale id or free slot).
    NoSuchContext,
    /// The context is live: release it first.
    NotReleased,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    Live,
    Released,
}

#[derive(Clone, Copy, Debug)]
struct DirectorySlot {
    mm: usize,
    generation: u32,
    state: SlotState,
}

/// The directory of one device file's contexts, keyed by mm identity.
///
/// Guarded by the caller's directory lock (all mutation is `&mut self`).
/// The caller keeps its per-context storage indexed by [`ContextId::slot`].
///
/// # The mm-identity rule
///
/// The key is the `mm_struct` address. The driver takes `mmgrab()` when it
/// creates a context and drops it (`mmdrop()`) only after
/// [`ContextTable::reap`], so while an entry exists (live or released) its
/// address cannot be reused by another mm. Hence a released mm is refused
/// for good, and a new mm at a reaped address gets a fresh context.
///
/// Always look up by the mm of the faulting VMA (`vmf->vma->vm_mm`), never by
/// the opener's or `current->mm` (remote access: ptrace, `/proc/pid/mem`).
pub struct ContextTable<const N: usize> {
    slots: [DirectorySlot; N],
}

impl<const N: usize> Default for ContextTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ContextTable<N> {
    /// An empty directory.
    pub const fn new() -> Self {
        Self { slots: [DirectorySlot { mm: 0, generation: 1, state: SlotState::Free }; N] }
    }

    fn id(index: usize, slot: &DirectorySlot) -> ContextId {
        ContextId {
            // Tables are limited to 65536 slots (see `usable`).
            slot: index as u16,
            generation: slot.generation,
        }
    }

    fn usable(&self) -> usize {
        N.min(u16::MAX as usize + 1)
    }

    fn find(&self, mm: usize) -> Option<(usize, &DirectorySlot)> {
        self.slots
            .iter()
            .take(self.usable())
            .enumerate()
            .find(|(_, slot)| slot.state != SlotState::Free && slot.mm == mm)
    }

    /// The context of `mm`, creating one (for this mm only) if it has none.
    /// Returns the id and whether it was created now (then the caller
    /// constructs its [`MmContext`] for the slot).
    pub fn get_or_create(&mut self, mm: usize) -> Result<(ContextId, bool), CreateError> {
        if mm == 0 {
            return Err(CreateError::InvalidMm);
        }
        if let Some((index, slot)) = self.find(mm) {
            let id = Self::id(index, slot);
            return match slot.state {
                SlotState::Live => Ok((id, false)),
                _ => Err(CreateError::Released(id)),
            };
        }
        let usable = self.usable();
        let (index, slot) = self
            .slots
            .iter_mut()
            .take(usable)
            .enumerate()
            .find(|(_, slot)| slot.state == SlotState::Free)
            .ok_or(CreateError::Full)?;
        slot.mm = mm;
        slot.state = SlotState::Live;
        Ok((Self::id(index, slot), true))
    }

    /// The context of `mm`, if any.
    pub fn lookup(&self, mm: usize) -> Lookup {
        match self.find(mm) {
            Some((index, slot)) if slot.state == SlotState::Live => Lookup::Live(Self::id(index, slot)),
            Some((index, slot)) => Lookup::Released(Self::id(index, slot)),
            None => Lookup::Absent,
        }
    }

    /// True if `id` names a live context.
    pub fn is_live(&self, id: ContextId) -> bool {
        matches!(self.slots.get(id.slot()), Some(slot) if slot.generation == id.generation && slot.state == SlotState::Live)
    }

    /// Marks the context of `mm` released. Exactly one call gets
    /// [`ReleaseOutcome::Released`] and does the teardown.
    pub fn release(&mut self, mm: usize) -> ReleaseOutcome {
        let usable = self.usable();
        let found = self
            .slots
            .iter_mut()
            .take(usable)
            .enumerate()
            .find(|(_, slot)| slot.state != SlotState::Free && slot.mm == mm);
        match found {
            None => ReleaseOutcome::NotFound,
            Some((index, slot)) => {
                let id = Self::id(index, slot);
                if slot.state == SlotState::Released {
                    ReleaseOutcome::AlreadyReleased(id)
                } else {
                    slot.state = SlotState::Released;
                    ReleaseOutcome::Released(id)
                }
            }
        }
    }

    /// Frees a released context's slot once nothing refers to it any more
    /// (notifiers removed, engine stopped). Returns the mm, which the
    /// caller may now `mmdrop()`.
    pub fn reap(&mut self, id: ContextId) -> Result<usize, ReapError> {
        let slot = self
            .slots
            .get_mut(id.slot())
            .filter(|slot| slot.generation == id.generation && slot.state != SlotState::Free)
            .ok_or(ReapError::NoSuchContext)?;
        if slot.state == SlotState::Live {
            return Err(ReapError::NotReleased);
        }
        let mm = slot.mm;
        slot.mm = 0;
        slot.state = SlotState::Free;
        slot.generation = match slot.generation.wrapping_add(1) {
            0 => 1,
            next => next,
        };
        Ok(mm)
    }

    /// Number of entries, live or released (not yet reaped).
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|slot| slot.state != SlotState::Free).count()
    }

    /// True if there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The mm of every live context (e.g. to release them all when the file
    /// is closed), in slot order.
    pub fn live(&self) -> impl Iterator<Item = (usize, ContextId)> + '_ {
        self.slots
            .iter()
            .take(self.usable())
            .enumerate()
            .filter(|(_, slot)| slot.state == SlotState::Live)
            .map(|(index, slot)| (slot.mm, Self::id(index, slot)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_or_create_is_per_mm() {
        let mut table = ContextTable::<4>::new();
        let (a, created) = table.get_or_create(0x1000).unwrap();
        assert!(created);
        let (a2, created) = table.get_or_create(0x1000).unwrap();
        assert!(!created);
        assert_eq!(a, a2);
        let (b, created) = table.get_or_create(0x2000).unwrap();
        assert!(created);
        assert_ne!(a.slot(), b.slot());
        assert_eq!(table.lookup(0x2000), Lookup::Live(b));
        assert_eq!(table.lookup(0x3000), Lookup::Absent);
        assert_eq!(table.get_or_create(0), Err(CreateError::InvalidMm));
    }

    #[test]
    fn release_is_once_and_final_until_reaped() {
        let mut table = ContextTable::<2>::new();
        let (a, _) = table.get_or_create(0x1000).unwrap();
        assert_eq!(table.release(0x1000), ReleaseOutcome::Released(a));
        assert_eq!(table.release(0x1000), ReleaseOutcome::AlreadyReleased(a));
        assert_eq!(table.get_or_create(0x1000), Err(CreateError::Released(a)));
        assert_eq!(table.lookup(0x1000), Lookup::Released(a));
        assert!(!table.is_live(a));
        assert_eq!(table.release(0x9000), ReleaseOutcome::NotFound);
        // The address may be reused only after the reap (mmdrop).
        assert_eq!(table.reap(a), Ok(0x1000));
        assert_eq!(table.reap(a), Err(ReapError::NoSuchContext));
        let (again, created) = table.get_or_create(0x1000).unwrap();
        assert!(created);
        assert_eq!(again.slot(), a.slot());
        assert_ne!(again, a, "a new incarnation never matches the old id");
    }

    #[test]
    fn reap_refuses_live_and_table_fills() {
        let mut table = ContextTable::<1>::new();
        let (a, _) = table.get_or_create(0x1000).unwrap();
        assert_eq!(table.reap(a), Err(ReapError::NotReleased));
        assert_eq!(table.get_or_create(0x2000), Err(CreateError::Full));
        assert_eq!(table.live().collect::<Vec<_>>(), vec![(0x1000, a)]);
        assert_eq!(table.len(), 1);
    }
}
