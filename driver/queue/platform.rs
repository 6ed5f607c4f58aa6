// SPDX-License-Identifier: GPL-2.0

//! The kernel services the protocol core needs, as seen from one queue
//! (`protocol::platform::Platform`): notifier sequences, pinning or
//! mirroring and DMA mapping a chunk (`mapping.rs`), sleeping and waking on
//! the queue's wait queue, the zap and reset hooks, and the tracepoints.

use core::sync::atomic::Ordering;

use kernel::ffi::{c_ulong, c_void};

use crate::hist::Kind;
use crate::mapping::{ChunkMapper, DmaMapping};
use crate::protocol::platform::{PinError, Platform, Waiter};
use crate::protocol::region::RegionDesc;
use crate::shim::{self, IntervalRaw};
use crate::trace;

use super::{call_cond, now_ns, Queue};

impl Queue {
    pub(super) fn platform(&self, mmap_locked: bool) -> QueuePlatform<'_> {
        QueuePlatform { q: self, mmap_locked }
    }
}

/// The kernel services for the protocol core, as seen from one queue.
pub(super) struct QueuePlatform<'a> {
    pub(super) q: &'a Queue,
    /// The caller holds the mm's mmap lock (the fault path).
    pub(super) mmap_locked: bool,
}

impl QueuePlatform<'_> {
    /// DMA-unmaps and unpins `mapping` (marked dirty first if `dirty`);
    /// a `teardown`'s phases go to the histograms and the `unmap_unpin`
    /// tracepoint (an eviction's do not).
    fn release(&self, mapping: DmaMapping, dirty: bool, teardown: bool) {
        let mapper = self.mapper();
        // A stuck edu transfer may still reach this mapping's pages: the
        // device's quarantine keeps them (and the IOVAs) until it is idle
        // again or quiesced (edu.rs).
        let mut mapping = if self.q.dev.edu.is_stuck() {
            let held = self.q.dev.hold_if_reached(mapping, |m| {
                mapper.prepare_for_quarantine(m, dirty);
                self.q.stats.unpinned(m.pages());
            });
            match held {
                Ok(()) => return,
                Err(mapping) => mapping,
            }
        } else {
            mapping
        };
        let t0 = now_ns();
        // The engine is drained (the core's contract): the device no longer
        // uses these addresses.
        mapper.unmap_dma(&mut mapping);
        let t1 = now_ns();
        if dirty {
            mapping.mark_dirty();
        }
        let n = mapping.pages();
        mapper.release_pages(&mut mapping);
        let t2 = now_ns();
        if teardown {
            self.q.record(Kind::Unmap, t1 - t0);
            self.q.record(Kind::Unpin, t2 - t1);
            trace::unmap_unpin(self.q.mm.id(), n, t1 - t0, t2 - t1);
        }
        self.q.stats.unpinned(n);
        self.q.dev.stats.unpinned(n);
    }

    fn sub(&self, region: &RegionDesc) -> Option<*mut IntervalRaw> {
        let slot = self.q.slots.get(region.handle.slot())?;
        if slot.ever_inserted.load(Ordering::Acquire) {
            Some(slot.sub.get().cast())
        } else {
            None
        }
    }

    /// Pins or mirrors, maps and unmaps this queue's chunks.
    fn mapper(&self) -> ChunkMapper {
        let q = self.q;
        let limit = q.memlock_limit.load(Ordering::Relaxed);
        ChunkMapper::new(q.dev.pdev.as_dev(), &q.mm, &q.user, limit, q.backing, self.mmap_locked)
    }
}

impl Waiter for QueuePlatform<'_> {
    fn now_ns(&self) -> u64 {
        // SAFETY: no precondition.
        unsafe { shim::warpq_ktime_ns() }
    }

    fn wait_until(&self, done: &dyn Fn() -> bool, deadline_ns: u64) -> bool {
        let timeout = if deadline_ns == u64::MAX { u64::MAX } else { deadline_ns.saturating_sub(self.now_ns()) };
        // SAFETY: the wait queue was initialised in `Queue::new`; `done`
        // outlives the call.
        unsafe {
            shim::warpq_wait_until(self.q.wq(), call_cond, &done as *const &dyn Fn() -> bool as *const c_void, timeout)
        }
    }

    fn wake(&self) {
        self.q.wake_all();
    }
}

impl Platform for QueuePlatform<'_> {
    type Mapping = DmaMapping;

    fn read_begin(&self, region: &RegionDesc) -> u64 {
        match self.sub(region) {
            // SAFETY: the notifier was initialised by an insertion and its mm
            // is held by the queue; after a removal the value is stale and
            // the core discards the rebuild (the region's generation changed).
            Some(sub) => unsafe { shim::warpq_interval_read_begin(sub) as u64 },
            None => 0,
        }
    }

    fn read_retry(&self, region: &RegionDesc, seq: u64) -> bool {
        match self.sub(region) {
            // SAFETY: as in `read_begin`.
            Some(sub) => unsafe { shim::warpq_interval_read_retry(sub, seq as c_ulong) },
            None => true,
        }
    }

    fn set_seq(&self, region: &RegionDesc, cur_seq: u64) {
        if let Some(sub) = self.sub(region) {
            // SAFETY: called from this notifier's callback with L held.
            unsafe { shim::warpq_interval_set_seq(sub, cur_seq as c_ulong) };
        }
    }

    fn pin_and_map(&self, region: &RegionDesc, chunk: usize, seq: u64) -> core::result::Result<DmaMapping, PinError> {
        let (start, len) = region.chunk_range(chunk);
        let mapped = self.mapper().map_chunk(self.sub(region), start, len, region.access.device_writes(), seq)?;
        self.q.record(Kind::Pin, mapped.pin_ns);
        self.q.record(Kind::Map, mapped.map_ns);
        let n = mapped.mapping.pages();
        self.q.stats.pinned(n);
        self.q.dev.stats.pinned(n);
        Ok(mapped.mapping)
    }

    fn unmap_and_unpin(&self, mapping: DmaMapping, dirty: bool) {
        self.release(mapping, dirty, true);
    }

    fn evict(&self, mapping: DmaMapping, dirty: bool) {
        // Counted in `evictions` (here, whether the rebuild that evicts goes
        // on to succeed or not), not as a teardown's phases.
        self.q.count(|c| &c.evictions, 1);
        self.release(mapping, dirty, false);
    }

    fn discard_unpublished(&self, mut mapping: DmaMapping) {
        // Never published, so never used by the device: nothing to mark
        // dirty, and not a teardown (the unmap_ns/unpin_ns histograms and
        // the unmap_unpin event are a teardown's).
        let mapper = self.mapper();
        mapper.unmap_dma(&mut mapping);
        let n = mapping.pages();
        mapper.release_pages(&mut mapping);
        self.q.stats.unpinned(n);
        self.q.dev.stats.unpinned(n);
    }

    fn schedule_zap(&self) {
        // SAFETY: initialised in `Queue::new`; cancelled before the queue goes.
        unsafe { shim::warpq_work_schedule(self.q.zap_work.get()) };
        // A teardown made the queue stale: waiters in WAIT go rebuild.
        self.q.note_stale();
        self.q.wake_all();
    }

    fn engine_reset(&self) {
        self.q.wake_all();
    }

    fn resumed(&self) {
        // The pool's sleeper re-checks for work after it set its flags; this
        // check follows our own resume (an RMW of the gate word), so one of
        // the two sees the other. No work, no kick: an idle queue's
        // invalidations stay cheap (B2).
        if self.q.engine_has_work() {
            self.q.dev.pool.kick();
        }
    }

    fn drain_started(&self, in_flight: u32, timeout_ns: u64) {
        trace::drain_start(self.q.mm.id(), in_flight, timeout_ns);
    }

    fn drain_finished(&self, abandoned: u32, ns: u64) {
        trace::drain_end(self.q.mm.id(), abandoned, ns);
    }
}
