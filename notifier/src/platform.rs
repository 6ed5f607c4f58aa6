// SPDX-License-Identifier: GPL-2.0

//! What the kernel (or a test double) provides to the protocol core.
//!
//! The core decides *when* and *in which order* things happen; the platform
//! does the kernel-specific parts: interval-notifier sequence numbers, GUP
//! and DMA mapping, sleeping and waking, scheduling the zap worker.

use core::ops::DerefMut;

use super::region::{Chunk, RegionDesc};

/// Sleeping and waking, as used by the queue gate's drain.
pub trait Waiter {
    /// A monotonic clock in nanoseconds (`ktime_get_ns()` in the kernel).
    fn now_ns(&self) -> u64;

    /// Sleeps until `done()` returns true or the clock reaches `deadline_ns`,
    /// and returns the last value of `done()`.
    ///
    /// `deadline_ns == u64::MAX` means no deadline. Implementations must not
    /// lose a wake-up: register as a waiter before each check of `done()`
    /// (`prepare_to_wait()` then check then `schedule_timeout()`, as
    /// `wait_event_timeout()` does). The caller may hold the context lock `L`,
    /// so this must not take it.
    fn wait_until(&self, done: &dyn Fn() -> bool, deadline_ns: u64) -> bool;

    /// Wakes the waiters of [`Waiter::wait_until`]. Called by the engine when
    /// it leaves a paused gate; must not sleep.
    fn wake(&self);
}

/// Why [`Platform::pin_and_map`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinError {
    /// The range can no longer be pinned with the region's access (no VMA, a
    /// hole, lost permission, `VM_IO`/`VM_PFNMAP`...): the region becomes
    /// [`Dead`](super::region::RegionState::Dead) and commands touching it
    /// complete with a fault status.
    Gone,
    /// Out of memory for now (`-ENOMEM`, `-EAGAIN`, a DMA-mapping failure:
    /// no IOVA space, the `RLIMIT_MEMLOCK` charge): the rebuild evicts a
    /// chunk and tries again, a few times, then fails the commands waiting
    /// for this chunk ([`XlateFault::NoMemory`]); the next command on it
    /// tries again.
    ///
    /// [`XlateFault::NoMemory`]: super::region::XlateFault::NoMemory
    Transient,
    /// The chunk alone is larger than the whole memory budget (its pages
    /// exceed the `RLIMIT_MEMLOCK` its charge is against): refused at once
    /// as [`Transient`](Self::Transient) is in the end, without evicting
    /// anything.
    NeverFits,
    /// The region's notifier was invalidated after `seq` was read
    /// (`hmm_range_fault()` said `-EBUSY`): a collision, retried as one.
    Collision,
}

/// The pinned (or mirrored) pages and DMA addresses of one chunk.
pub trait Mapping: Sized {
    /// Where one region's chunks live: the caller allocates it for each
    /// REGISTER before it takes `L` (the core allocates nothing), at least
    /// [`chunk_count_for`](super::region::chunk_count_for) chunks long,
    /// every one [`Chunk::new`]; the table owns it while
    /// the region is registered and drops it (with `L` held: a `kvfree`,
    /// which allocates nothing and never waits for reclaim) when the
    /// region goes.
    type Chunks: DerefMut<Target = [Chunk<Self>]>;

    /// Number of pages pinned by this mapping (for the reports and counters).
    fn page_count(&self) -> u64;
}

/// The kernel services the core needs for one mm context.
///
/// One `Platform` value serves one context: it knows the mm, the device and
/// the interval notifier of each region. Find the notifier by the whole
/// [`RegionDesc::handle`] (slot *and* generation): a removed region's
/// notifier can still be in a callback while a new region reuses the slot.
/// `read_begin` and `read_retry` may be called for a region that was just
/// unregistered (its notifier removed): return anything; the core discards
/// the result because the region is no longer in the table.
pub trait Platform: Waiter {
    /// Pages plus DMA addresses of one chunk. Owned by the region table
    /// while published; handed back to [`Platform::unmap_and_unpin`].
    type Mapping: Mapping;

    /// `mmu_interval_read_begin()` on the region's notifier. Called without
    /// `L`; may sleep (waits for an invalidation of this notifier in flight).
    fn read_begin(&self, region: &RegionDesc) -> u64;

    /// `mmu_interval_read_retry()`: true if the notifier was invalidated since
    /// `seq` was read. Called with `L` held.
    fn read_retry(&self, region: &RegionDesc, seq: u64) -> bool;

    /// `mmu_interval_set_seq()` with the callback's `cur_seq`. Called with `L`
    /// held, from the invalidate callback of this region's notifier.
    fn set_seq(&self, region: &RegionDesc, cur_seq: u64);

    /// Makes the pages of chunk `chunk` of the region
    /// ([`RegionDesc::chunk_range`]) reachable by the device, as of notifier
    /// sequence `seq` (from [`Platform::read_begin`]): the `pin` backing pins
    /// them (`FOLL_LONGTERM`, plus `FOLL_WRITE` if the device may write), the
    /// `mirror` backing faults them in with `hmm_range_fault()` against
    /// `seq` and holds no reference; then DMA-maps them. Called without `L`;
    /// may sleep and allocate.
    fn pin_and_map(&self, region: &RegionDesc, chunk: usize, seq: u64) -> Result<Self::Mapping, PinError>;

    /// DMA-unmaps and unpins (a `mirror` mapping holds no pin). `dirty`: the device may have written, so mark
    /// the pages dirty first (`set_page_dirty()` or a trylock variant; never
    /// `unpin_user_pages_dirty_lock()`, the folio may be locked by the
    /// caller of the invalidation). May be called with `L` held; must not
    /// allocate.
    fn unmap_and_unpin(&self, mapping: Self::Mapping, dirty: bool);

    /// Undoes a [`Platform::pin_and_map`] whose mapping was never published
    /// (another rebuild won the chunk, an invalidation collided, the context
    /// was released): the device never saw it. Not a teardown, so a platform
    /// that counts teardown costs may count this apart; by default the same
    /// as `unmap_and_unpin(mapping, false)`.
    fn discard_unpublished(&self, mapping: Self::Mapping) {
        self.unmap_and_unpin(mapping, false);
    }

    /// As [`Platform::unmap_and_unpin`], for a chunk evicted to stay within
    /// the device-address share (`rebuild.rs`), not torn down by an
    /// invalidation: a platform that records teardown costs may count it
    /// apart. By default the same.
    fn evict(&self, mapping: Self::Mapping, dirty: bool) {
        self.unmap_and_unpin(mapping, dirty);
    }

    /// Queues the worker that zaps the queue's user mapping so that the next
    /// touch faults (never zap inside the invalidate callback). Must not
    /// sleep. The worker asks [`MmContext::zap_needed`] first.
    ///
    /// [`MmContext::zap_needed`]: super::context::MmContext::zap_needed
    fn schedule_zap(&self);

    /// The gate was reset after a drain timeout: make the engine stop touching
    /// memory promptly (abort the device's work, wake the engine thread).
    /// Called with `L` held; must not sleep.
    fn engine_reset(&self) {}

    /// A teardown resumed the gate it paused. An engine that found the gate
    /// paused may have gone to sleep meanwhile, with commands it could run
    /// now: wake it if there are (nothing else would until the next
    /// submission). Called with `L` held; must not sleep.
    fn resumed(&self) {}

    /// A teardown paused the gate and starts draining the engine, with
    /// `in_flight` commands inside and `timeout_ns` to leave (for tracing;
    /// called with `L` held; must not sleep).
    fn drain_started(&self, _in_flight: u32, _timeout_ns: u64) {}

    /// The drain is over after `ns`: the engine left in time, or a reset
    /// abandoned `abandoned` commands after the timeout (for tracing; called
    /// with `L` held; must not sleep).
    fn drain_finished(&self, _abandoned: u32, _ns: u64) {}
}
