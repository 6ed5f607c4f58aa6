// SPDX-License-Identifier: GPL-2.0

//! The invalidate callback of one region's interval notifier, as one
//! function: [`invalidate`].
//!
//! The kernel calls the `invalidate` op of every interval notifier whose
//! interval intersects the range, each with its own `cur_seq`; one call
//! here handles the notifier's own region. `mmu_interval_set_seq()` must be
//! called on that notifier with that `cur_seq` under `L`, which is why the
//! unit is one region and not the whole range.

use super::context::{Config, ContextLock, DrainReport, MmContext};
use super::platform::{Mapping, Platform};
use super::policy::{decide, Decision, Event, IgnoreReason};
use super::region::{RegionDesc, StateKind};

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
}

/// What [`invalidate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidateOutcome {
    /// The policy skipped the event (`L` not taken, sequence untouched).
    Ignored(IgnoreReason),
    /// Sequence set; the region had nothing pinned (or is gone): nothing to
    /// drain.
    NothingMapped,
    /// Non-blocking call and the region is mapped, or `L` was contended: the
    /// callback must return false (the OOM reaper retries later).
    CannotProceed,
    /// Drained, unmapped and unpinned; the queue is stale and a zap queued.
    TornDown {
        /// Pages unpinned.
        pages_unpinned: u64,
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
/// non-blocking call returns "cannot proceed" iff the region is mapped,
/// never sleeping; (c) if the region is mapped: pause, drain with the
/// bounded wait (on timeout reset the queue, then wait for the engine to
/// leave), unmap and unpin (dirty if the device may write), mark the queue
/// stale, resume the transient pause; (d) drop `L` and queue the zap.
///
/// Safety comes from the drain, not from the zap: when this returns, the
/// engine is out and cannot enter until a rebuild.
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
        decide(config.policy, inv.event, region.access, inv.owner_is_us)
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

    let mapped = matches!(ctx.region(&key, region.handle).map(|info| info.state), Ok(StateKind::Mapped { .. }));
    if !mapped {
        return report(InvalidateOutcome::NothingMapped);
    }
    if !inv.blockable {
        return report(InvalidateOutcome::CannotProceed);
    }

    let drain_start = platform.now_ns();
    let paused = ctx.gate().pause();
    let (drained, drain) = ctx.drain_or_reset(&paused, platform, config);
    let drain_ns = platform.now_ns().saturating_sub(drain_start);
    let mut pages_unpinned = 0;
    // SAFETY: `key` proves `L` is held and `drained` that the gate is paused
    // and drained.
    if let Some((desc, mapping)) = unsafe { ctx.table().take_mapping(region.handle) } {
        pages_unpinned = mapping.page_count();
        platform.unmap_and_unpin(mapping, desc.access.device_writes());
    }
    paused.mark_stale(&drained);
    drop(paused);
    drop(key);

    platform.schedule_zap();
    report(InvalidateOutcome::TornDown { pages_unpinned, drain, drain_ns })
}
