// SPDX-License-Identifier: GPL-2.0

//! Who rebuilds a stale queue, and when: the owner's ring fault or ioctl
//! (WAIT, SUBMIT, WAKE), or the rebuild worker for a process that only
//! polls its completions. The protocol core's `rebuild` does the work; this
//! is the glue that picks the caller, records the time, and hands a stale
//! queue between the worker and a WAIT of the owner (`OwnerWaiting`).

use core::sync::atomic::{fence, Ordering};

use kernel::bindings;
use kernel::prelude::*;
use kernel::types::Opaque;

use crate::hist::Kind;
use crate::protocol::rebuild::{rebuild, rebuild_every_wanted, RebuildError, RebuildReport};
use crate::shim;
use crate::trace;
use crate::uapi;

use super::platform::QueuePlatform;
use super::{now_ns, Queue};

impl Queue {
    pub(super) fn rebuild(&self, platform: &QueuePlatform<'_>) -> core::result::Result<RebuildReport, RebuildError> {
        self.rebuild_as(platform, || rebuild(&self.ctx, &self.lock, platform, &self.config))
    }

    /// As [`Self::rebuild`], for REGISTER: chunks another rebuild has
    /// claimed are mapped too, so that every chunk of the new region is
    /// settled (mapped, or refused with its reason in the report) when it
    /// returns.
    pub(super) fn rebuild_for_register(
        &self,
        platform: &QueuePlatform<'_>,
    ) -> core::result::Result<RebuildReport, RebuildError> {
        self.rebuild_as(platform, || rebuild_every_wanted(&self.ctx, &self.lock, platform, &self.config))
    }

    fn rebuild_as(
        &self,
        platform: &QueuePlatform<'_>,
        how: impl FnOnce() -> core::result::Result<RebuildReport, RebuildError>,
    ) -> core::result::Result<RebuildReport, RebuildError> {
        let _running = RebuildRunning::enter(self)?;
        let mm = self.mm.id();
        trace::rebuild_start(mm, platform.mmap_locked);
        let start = now_ns();
        let report = how();
        let end = now_ns();
        match &report {
            Ok(r) => {
                self.count(|c| &c.rebuilds, u64::from(r.mapped));
                self.count(|c| &c.rebuild_retries, u64::from(r.retries));
                if r.mapped > 0 {
                    self.record(Kind::Rebuild, end - start);
                }
                trace::rebuild_end(mm, r.mapped, r.pages_pinned, r.retries, 0);
            }
            Err(e) => trace::rebuild_end(mm, 0, 0, 0, Error::from(*e).to_errno()),
        }
        if !self.ctx.gate().is_stale() {
            let since = self.stale_since.swap(0, Ordering::Relaxed);
            if since != 0 {
                self.record(Kind::Paused, end.saturating_sub(since));
                trace::queue_state(mm, false);
            }
        }
        // Advisory for user space; the gate is the truth.
        self.ring.set_flag(uapi::WARPQ_RING_STALE, self.ctx.gate().is_stale());
        // Whatever happened, the gate may have reopened: the engine and
        // waiters re-check their conditions.
        self.wake_all();
        report
    }

    /// From an ioctl of this queue's own mm: rebuild if an invalidation tore
    /// something down, so that a caller that never touches the ring (WAIT)
    /// still makes progress.
    pub(crate) fn rebuild_if_stale(&self) -> Result {
        if !self.ctx.gate().is_stale() {
            return Ok(());
        }
        injected_rebuild_delay();
        match self.rebuild(&self.platform(false)) {
            Ok(_) | Err(RebuildError::Released) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// SUBMIT and WAKE on a stale queue. With the rebuild worker on, they
    /// queue it and return: a submitter does not pay for the rebuild of a
    /// chunk another stream's command waits for (B7: with the rebuild
    /// inline, every WAKE of a busy queue cost a 2 MiB rebuild, and the
    /// streams on unaffected chunks starved). Without it they rebuild, as
    /// WAIT does; a rebuild that collides with ongoing invalidations is not
    /// an error here: the queue stays stale and the next WAIT, WAKE or touch
    /// of the ring retries.
    pub(super) fn rebuild_for_submitter(&self) -> Result {
        if !self.ctx.gate().is_stale() || self.schedule_rebuild() {
            return Ok(());
        }
        match self.rebuild_if_stale() {
            Err(e) if e == EAGAIN => Ok(()),
            other => other,
        }
    }

    /// The queue went stale (a command waits for a rebuild): the ring's
    /// advisory flag, the start of the paused time (histogram `paused_ns`,
    /// recorded when a rebuild reopens it) and the queue-state event.
    pub(super) fn note_stale(&self) {
        self.ring.set_flag(uapi::WARPQ_RING_STALE, true);
        if self.stale_since.compare_exchange(0, now_ns().max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            trace::queue_state(self.mm.id(), true);
        }
    }

    /// Queues the rebuild worker, if the `rebuild_worker` parameter is on;
    /// says whether it did.
    pub(super) fn schedule_rebuild(&self) -> bool {
        // SAFETY: reads a module parameter; no precondition.
        let on = unsafe { shim::warpq_param_rebuild_worker() };
        if on {
            // SAFETY: initialised in `new`; cancelled before the queue goes.
            unsafe { shim::warpq_work_schedule(self.rebuild_work.get()) };
        }
        on
    }

    /// A command asked for a rebuild (the engine set the queue stale): with
    /// the rebuild worker on, the owner rebuilds in WAIT if it waits there
    /// (woken here, as the worker would: its own CPU time, without the
    /// worker's hop, one wakeup less per command that waits), else the
    /// worker is queued. Says whether a rebuilder was told (otherwise the
    /// caller zaps, so that the owner's next touch of the ring rebuilds).
    pub(super) fn call_rebuilder(&self) -> bool {
        // SAFETY: reads a module parameter; no precondition.
        if !unsafe { shim::warpq_param_rebuild_worker() } {
            return false;
        }
        self.kick_waiting_owner() || self.schedule_rebuild()
    }

    /// If the owner waits in WAIT, leaves the rebuild to it: wakes it (it
    /// rebuilds in its own time) and says so. The queue is stale (set
    /// before the caller got here).
    ///
    /// Store buffering with `OwnerWaiting::drop`: STALE was set before
    /// this fence; a WAIT leaving decrements, fences, then reads STALE.
    /// Either this sees it waiting (and wakes it), or it sees the queue
    /// stale as it leaves and queues the worker.
    fn kick_waiting_owner(&self) -> bool {
        fence(Ordering::SeqCst);
        if self.owner_waiting.load(Ordering::SeqCst) == 0 {
            return false;
        }
        self.rebuild_kicks.fetch_add(1, Ordering::SeqCst);
        self.wake_waiters();
        true
    }

    /// The rebuild worker: maps the chunks commands wait for, so that a
    /// process that only sleeps (in epoll, say) still progresses. Runs in a
    /// kernel worker: the pin and mirror paths take `mmget_not_zero` and the
    /// mmap lock themselves, and the `pin` charge is held to the limit the
    /// registering task had.
    pub(super) fn rebuild_from_worker(&self) {
        if !self.ctx.gate().is_stale() || self.ctx.is_released() || self.revoked.load(Ordering::SeqCst) {
            return;
        }
        // An owner that went into WAIT after the engine queued this worker
        // rebuilds in its own time (it retries a stale queue every few ms,
        // and queues this worker again when it leaves).
        if self.kick_waiting_owner() {
            return;
        }
        if !self.mm.has_users() {
            return;
        }
        injected_rebuild_delay();
        let _ = self.rebuild(&self.platform(false));
    }
}

/// A rebuild in progress (`Queue::rebuilds_running`), which revocation
/// waits for.
struct RebuildRunning<'a>(&'a Queue);

impl<'a> RebuildRunning<'a> {
    /// Counts a rebuild in, unless the queue was revoked (then it is not to
    /// start: `Released`). Counted before the check and set before
    /// revocation's wait (both SeqCst): either the rebuild sees `revoked`,
    /// or revocation sees it counted and waits.
    fn enter(q: &'a Queue) -> core::result::Result<Self, RebuildError> {
        q.rebuilds_running.fetch_add(1, Ordering::SeqCst);
        let running = RebuildRunning(q);
        if q.revoked.load(Ordering::SeqCst) {
            return Err(RebuildError::Released);
        }
        Ok(running)
    }
}

impl Drop for RebuildRunning<'_> {
    fn drop(&mut self) {
        if self.0.rebuilds_running.fetch_sub(1, Ordering::SeqCst) == 1 && self.0.revoked.load(Ordering::SeqCst) {
            // Revocation may be waiting for the last one.
            self.0.wake_waiters();
        }
    }
}

/// A WAIT of the queue's owner in progress (`Queue::owner_waiting`). When
/// the last one leaves with the queue still stale, the worker takes over.
pub(super) struct OwnerWaiting<'a>(&'a Queue);

impl<'a> OwnerWaiting<'a> {
    pub(super) fn enter(q: &'a Queue) -> Self {
        q.owner_waiting.fetch_add(1, Ordering::SeqCst);
        OwnerWaiting(q)
    }
}

impl Drop for OwnerWaiting<'_> {
    fn drop(&mut self) {
        // Store buffering with the worker (`rebuild_from_worker`): it
        // read STALE (set before it was queued), fences, reads this count;
        // this decrements, fences, reads STALE. With both fences either it
        // sees no WAIT and rebuilds, or this sees the queue stale and
        // queues it again.
        let last = self.0.owner_waiting.fetch_sub(1, Ordering::SeqCst) == 1;
        fence(Ordering::SeqCst);
        if last && self.0.ctx.gate().is_stale() {
            self.0.schedule_rebuild();
        }
    }
}

/// A monotonic clock in nanoseconds.
/// Fault injection (`fail_rebuild_delay_ms`, tests only): a rebuild of the
/// chunks commands wait for, by the worker or an ioctl, sleeps first. The
/// caller holds no lock.
pub(super) fn injected_rebuild_delay() {
    // SAFETY: reads a module parameter; no precondition.
    let delay_ms = unsafe { shim::warpq_param_fail_rebuild_delay_ms() };
    if delay_ms != 0 {
        // SAFETY: the callers (the rebuild worker, an ioctl) may sleep and
        // hold no lock.
        unsafe { bindings::msleep(delay_ms) };
    }
}

pub(super) unsafe extern "C" fn rebuild_work_fn(work: *mut bindings::work_struct) {
    // SAFETY: `work` is the `rebuild_work` field of a live queue (the queue
    // cancels the work before it is freed).
    let queue = unsafe { &*kernel::container_of!(work.cast::<Opaque<bindings::work_struct>>(), Queue, rebuild_work) };
    queue.rebuild_from_worker();
}
