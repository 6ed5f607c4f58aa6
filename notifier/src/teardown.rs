// SPDX-License-Identifier: GPL-2.0

//! The invalidate callback of one region's interval notifier, as one
//! function: [`invalidate`].
//!
//! The kernel calls the `invalidate` op of every interval notifier whose
//! interval intersects the range, each with its own `cur_seq`; one call
//! here handles the notifier's own region. `mmu_interval_set_seq()` must be
//! called on that notifier with that `cur_seq` under `L`, which is why the
//! unit is one region and not the whole range. Inside the region, only the
//! chunks the range intersects are torn down; the others stay mapped and
//! commands on them keep running after the drain.

use super::context::{Config, ContextLock, DrainReport, MmContext};
use super::platform::Platform;
use super::policy::{decide, Decision, Event, IgnoreReason};
use super::region::RegionDesc;

/// One call of the invalidate callback (`struct mmu_notifier_range` plus the
/// notifier's region).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalidation {
    /// The region of the notifier being called (kept by the driver next to
    /// its `struct mmu_interval_notifier`).
    pub region: RegionDesc,
    /// The callback's `cur_seq`.
    pub cur_seq: u64,
    /// `range->start`.
    pub start: u64,
    /// `range->end` (exclusive).
    pub end: u64,
    /// `range->event`.
    pub event: Event,
    /// `mmu_notifier_range_blockable(range)`; false only for the OOM reaper.
    pub blockable: bool,
    /// `range->owner` is this driver.
    pub owner_is_us: bool,
    /// PROTECTION_VMA only: every VMA over the range still grants write and
    /// none is uffd-wp registered, looked up under the mmap lock the caller
    /// of every PROTECTION_VMA invalidation holds (false when in doubt).
    pub write_kept: bool,
}

/// What [`invalidate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidateOutcome {
    /// The policy skipped the event (`L` not taken, sequence untouched).
    Ignored(IgnoreReason),
    /// Sequence set; no chunk in the range was mapped (or the region is
    /// gone): nothing to drain.
    NothingMapped,
    /// Non-blocking call and the region is mapped, or `L` was contended: the
    /// callback must return false (the OOM reaper retries later).
    CannotProceed,
    /// Drained; the chunks in the range unmapped and unpinned (the queue
    /// keeps running: a command that needs one of them asks for a rebuild).
    TornDown {
        /// Pages unpinned.
        pages_unpinned: u64,
        /// Chunks the range intersects (those mapped were torn down).
        chunks: u32,
        /// How the drain ended (a reset means: complete the abandoned
        /// commands with an error).
        drain: DrainReport,
        /// How long pausing and draining the engine took.
        drain_ns: u64,
    },
    /// The lock does not guard this context's key: a driver bug; nothing was
    /// done.
    WrongLock,
}

/// The report of one invalidation, for counters and tracing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidateReport {
    /// The policy's decision (a `TearDown` may still find nothing mapped).
    pub decision: Decision,
    /// What happened.
    pub outcome: InvalidateOutcome,
}

impl InvalidateReport {
    /// The value the `invalidate` op returns: false only when a non-blocking
    /// call cannot proceed.
    pub fn callback_result(&self) -> bool {
        !matches!(self.outcome, InvalidateOutcome::CannotProceed)
    }
}

/// The invalidate callback for the notifier of `inv.region`.
///
/// In order: (a) policy decision, return if ignored; (b) take `L` (trylock
/// if non-blocking) and `mmu_interval_set_seq()` unconditionally; a
/// non-blocking call returns "cannot proceed" iff a chunk in the range is
/// mapped, never sleeping; (c) if one is: pause, drain with the bounded wait
/// (on timeout reset the queue, then wait for the engine to leave), unmap
/// and unpin the range's mapped chunks (dirty if the device may write),
/// resume the transient pause; (d) drop `L`.
///
/// Safety comes from the drain: when this returns, the engine is out of
/// every command that was running, and no command can reach a torn-down
/// chunk until a rebuild maps it again (the engine's translation finds it
/// unmapped and asks for that rebuild, see `EngineGuard::request_rebuild`).
pub fn invalidate<P, L, const N: usize>(
    ctx: &MmContext<P::Mapping, N>,
    lock: &L,
    platform: &P,
    config: &Config,
    inv: &Invalidation,
) -> InvalidateReport
where
    P: Platform,
    L: ContextLock,
{
    let region = &inv.region;
    let decision = if region.overlaps(inv.start, inv.end) {
        decide(config.policy, inv.event, region.access, inv.owner_is_us, inv.write_kept)
    } else {
        Decision::Ignore(IgnoreReason::NoOverlap)
    };
    let report = |outcome| InvalidateReport { decision, outcome };
    if let Decision::Ignore(reason) = decision {
        return report(InvalidateOutcome::Ignored(reason));
    }

    let key = if inv.blockable {
        lock.lock()
    } else {
        match lock.try_lock() {
            Some(key) => key,
            None => return report(InvalidateOutcome::CannotProceed),
        }
    };
    if !ctx.owns_key(&key) {
        return report(InvalidateOutcome::WrongLock);
    }
    // Unconditionally, and under `L`: a rebuild that read the sequence before
    // this point and takes `L` after it sees `read_retry()` true.
    platform.set_seq(region, inv.cur_seq);

    let chunks = region.chunks_in(inv.start, inv.end);
    let chunk_count = chunks.len() as u32;
    // SAFETY: `key` proves `L` is held.
    let mapped = unsafe { ctx.table().any_mapped(region.handle, chunks.clone()) };
    // An UNMAP (munmap, MAP_FIXED over, mremap away, MREMAP_DONTUNMAP) ends
    // the registration over its range: the chunks die, mapped or not, so no
    // rebuild can map whatever is mapped there later. Killing an unmapped
    // chunk is a write the engine could race with, so it drains too. The
    // non-blockable caller (the OOM reaper, of a dying process that no
    // rebuild serves any more) only tears down what is mapped.
    // SAFETY: `key` proves `L` is held.
    let kill = inv.event == Event::Unmap && unsafe { ctx.table().any_alive(region.handle, chunks.clone()) };
    let work = mapped || (kill && inv.blockable);
    if !work {
        return report(InvalidateOutcome::NothingMapped);
    }
    if !inv.blockable {
        return report(InvalidateOutcome::CannotProceed);
    }

    let drain_start = platform.now_ns();
    let paused = ctx.gate().pause();
    let (drained, drain) = ctx.drain_or_reset(&paused, platform, config);
    let drain_ns = platform.now_ns().saturating_sub(drain_start);
    // SAFETY: `key` proves `L` is held and `drained` that the gate is
    // paused and drained.
    let pages_unpinned = unsafe {
        ctx.table().take_chunks(region.handle, chunks, kill, |desc, mapping| {
            platform.unmap_and_unpin(mapping, desc.access.device_writes())
        })
    };
    let was_stale = ctx.gate().is_stale();
    if kill && was_stale {
        // A command may have waited for a chunk that just died: it will
        // fault now, not wait, so the queue may reopen.
        // SAFETY: `L` is held; `drained` is about this context's gate.
        unsafe { ctx.refresh_stale(&paused, &drained) };
    }
    drop(paused);
    if was_stale && !ctx.gate().is_stale() {
        platform.wake();
    } else {
        platform.resumed();
    }
    drop(key);
    report(InvalidateOutcome::TornDown { pages_unpinned, chunks: chunk_count, drain, drain_ns })
}
