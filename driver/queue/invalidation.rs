// SPDX-License-Identifier: GPL-2.0

//! The interval-notifier callback of a queue's regions and the zap worker
//! it queues: the callback hands the invalidation to the protocol core's
//! `invalidate` (under L) and records its phases; the worker zaps the
//! queue's user mappings outside the callback, so the owner's next touch
//! faults and rebuilds.

use core::sync::atomic::Ordering;

use kernel::bindings;
use kernel::ffi::c_ulong;
use kernel::types::Opaque;

use crate::hist::Kind;
use crate::protocol::policy::{Event, Policy};
use crate::protocol::teardown::{invalidate, Invalidation};
use crate::region_slots::{RegionSlot, RegionSlots};
use crate::shim::{self, IntervalRaw, RangeRaw};
use crate::trace;
use crate::vma_rules::{range_keeps_write, zap_queue_mapping};

use super::{now_ns, Queue};

impl Queue {
    /// The zap worker: makes the next touch of the queue's mappings fault.
    pub(super) fn zap(&self) {
        if !self.ctx.zap_needed() {
            return;
        }
        self.count(|c| &c.zaps, 1);
        trace::zap(self.mm.id());
        for m in &self.ring_mappings {
            let addr = m.load(Ordering::Relaxed);
            if addr != 0 {
                // SAFETY: the mm is held by `self.mm` (it takes a user
                // reference and the mmap lock, and zaps only a vma that is
                // still a queue mapping of our file).
                unsafe { zap_queue_mapping(self.mm.non_null(), addr, self.file_private) };
            }
        }
    }

    /// The interval notifier callback of `slot`.
    pub(super) fn invalidate(&self, slot: &RegionSlot, range: *const RangeRaw, cur_seq: u64) -> bool {
        // SAFETY: written before the notifier was inserted; not changed
        // until it is removed (which waits for this callback).
        let Some(region) = (unsafe { *slot.desc.get() }) else {
            return true;
        };
        let (mut start, mut end, mut event) = (0, 0, 0);
        // SAFETY: `range` is the callback's valid range.
        let blockable = unsafe {
            shim::warpq_range_info(range, &mut start, &mut end, &mut event);
            shim::warpq_range_blockable(range)
        };
        let event_kind = Event::from_raw(event);
        // Only a filtered PROTECTION_VMA on a device-writable region asks
        // whether the VMAs kept write (NUMA hinting's scans do).
        let write_kept = event_kind == Event::ProtectionVma
            && self.config.policy == Policy::Filtered
            && region.access.device_writes()
            && {
                let lo = (start as u64).max(region.start);
                let hi = (end as u64).min(region.end());
                // SAFETY: `range` is the callback's valid range (the walk
                // happens only if the mmap lock of `range->mm` is held).
                lo < hi && unsafe { range_keeps_write(range, lo, hi) }
            };
        let inv = Invalidation {
            region,
            cur_seq,
            start: start as u64,
            end: end as u64,
            event: event_kind,
            blockable,
            owner_is_us: false,
            write_kept,
        };
        let notifier = slot as *const RegionSlot as usize;
        let mm = self.mm.id();
        trace::invalidate_start(notifier, mm, start as u64, end as u64, event);
        let t0 = now_ns();
        let report = invalidate(&self.ctx, &self.lock, &self.platform(false), &self.config, &inv);
        let took = now_ns().saturating_sub(t0);
        use crate::protocol::teardown::InvalidateOutcome as O;
        let (outcome, pages, drain_ns, timed_out) = match report.outcome {
            O::Ignored(_) => (trace::InvalidateOutcome::Ignored, 0, 0, false),
            O::NothingMapped => (trace::InvalidateOutcome::NothingMapped, 0, 0, false),
            O::CannotProceed => (trace::InvalidateOutcome::CannotProceed, 0, 0, false),
            O::TornDown { pages_unpinned, drain, drain_ns, .. } => (
                trace::InvalidateOutcome::TornDown,
                pages_unpinned,
                drain_ns,
                matches!(drain, crate::protocol::context::DrainReport::Reset { .. }),
            ),
            O::WrongLock => (trace::InvalidateOutcome::Error, 0, 0, false),
        };
        if !matches!(report.outcome, O::Ignored(_)) {
            self.record(Kind::Invalidate, took);
        }
        if matches!(outcome, trace::InvalidateOutcome::TornDown) {
            self.record(Kind::Drain, drain_ns);
        }
        trace::invalidate_end(notifier, mm, event, outcome, pages, drain_ns, timed_out);
        self.stats.invalidation(event);
        self.dev.stats.invalidation(event);
        match report.outcome {
            crate::protocol::teardown::InvalidateOutcome::Ignored(_) => self.count(|c| &c.ignored_by_policy, 1),
            crate::protocol::teardown::InvalidateOutcome::TornDown { drain, .. } => {
                self.count(|c| &c.teardowns, 1);
                self.count(|c| &c.drains, 1);
                if matches!(drain, crate::protocol::context::DrainReport::Reset { .. }) {
                    self.count(|c| &c.drain_timeouts, 1);
                }
            }
            _ => {}
        }
        report.callback_result()
    }
}

pub(super) unsafe extern "C" fn zap_work_fn(work: *mut bindings::work_struct) {
    // SAFETY: `work` is the `zap_work` field of a live queue (the queue
    // cancels the work before it is freed).
    let queue = unsafe { &*kernel::container_of!(work.cast::<Opaque<bindings::work_struct>>(), Queue, zap_work) };
    queue.zap();
}

/// The interval-notifier callback (through the shim's ops).
#[no_mangle]
extern "C" fn warpq_rs_invalidate(sub: *mut IntervalRaw, range: *const RangeRaw, cur_seq: c_ulong) -> bool {
    // SAFETY: `sub` is the `sub` field of a `RegionSlot` of a live queue:
    // notifiers are removed before their queue is freed.
    let (slot, queue) = unsafe { RegionSlots::from_notifier(sub.cast()) };
    queue.invalidate(slot, range, cur_seq as u64)
}
