// SPDX-License-Identifier: GPL-2.0

//! The queue's side of the engine pool (`pool.rs`): a worker that claimed
//! the queue runs one batch of its commands here. It retries the commands
//! set aside for a rebuild (`overtake.rs`), takes new ones from the ring,
//! executes each inside the gate (`engine.rs`), and publishes their
//! completions and the eventfd signal. Locks: K around the batch, E to
//! signal (the lock order in `queue.rs`).

use core::sync::atomic::Ordering;

use kernel::prelude::*;

use crate::engine;
use crate::eventfd::EventFd;
use crate::mapping::DmaMapping;
use crate::protocol::context::EngineGuard;
use crate::protocol::overtake::{Admission, Footprints, SetAside};
use crate::protocol::platform::Platform;
use crate::region_slots::MAX_REGIONS;
use crate::ring::{CompletionBatch, Sqe};
use crate::shim;
use crate::uapi;

use super::platform::QueuePlatform;
use super::{Queue, SET_ASIDE_MAX};

impl Queue {
    /// Whether the engine could run a command now (the pool's test before
    /// it claims the queue): CQ room, a gate that admits it, and either
    /// submissions it may take or set-aside commands worth a retry (the
    /// queue is no longer stale, or a rebuild ran since the last retry).
    pub(crate) fn engine_has_work(&self) -> bool {
        let gate = self.ctx.gate().snapshot();
        if !gate.admits_engine() || self.ring.cq_space() == 0 {
            return false;
        }
        let from_ring = self.ring.sq_pending() > 0 && !self.ring_held.load(Ordering::Acquire);
        let retry = self.set_aside_len.load(Ordering::Acquire) > 0
            && (!gate.stale || self.ctx.chunks_resolved() != self.retried_at.load(Ordering::Relaxed));
        from_ring || retry
    }

    /// One batch of this queue's commands, by the pool worker that claimed
    /// it.
    pub(crate) fn run_engine_batch(&self) {
        self.engine_run(&self.platform(false));
    }

    /// Executes one batch of commands (see [`CompletionBatch`]): first the
    /// set-aside ones that can run now, then submissions from the ring,
    /// while the gate lets the engine in; publishes their completions.
    pub(super) fn engine_run(&self, platform: &QueuePlatform<'_>) {
        let mut batch = CompletionBatch::default();
        {
            let mut set_aside = self.set_aside.lock();
            self.retry_set_aside(&mut set_aside, platform, &mut batch);
            self.run_ring(&mut set_aside, platform, &mut batch);
            if set_aside.is_empty() {
                // Chunks reserved by commands that failed or were aborted
                // after they waited become evictable again.
                self.ctx.no_command_waits();
            }
            self.set_aside_len.store(set_aside.len() as u32, Ordering::Release);
            self.ring.hold_head(set_aside.get(0).map(|a| a.index));
        }
        // Whatever ended the run (no more submissions, a full CQ, the gate
        // closed, a rebuild to wait for), nothing posted stays unpublished.
        self.publish_completions(&mut batch);
    }

    /// Retries the set-aside commands, oldest first, when a rebuild may
    /// have mapped their chunks. One that shares a chunk with an older
    /// set-aside command stays behind it.
    pub(super) fn retry_set_aside(
        &self,
        set_aside: &mut SetAside<Aside, SET_ASIDE_MAX>,
        platform: &QueuePlatform<'_>,
        batch: &mut CompletionBatch,
    ) {
        // Read before the pass: a chunk resolved during it is another reason
        // to come back.
        let resolved = self.ctx.chunks_resolved();
        if set_aside.is_empty() || (self.ctx.gate().is_stale() && resolved == self.retried_at.load(Ordering::Relaxed)) {
            return;
        }
        let mut index = 0;
        while self.ring.cq_space() > 0 {
            let (Some(aside), Some(then)) = (set_aside.get(index), set_aside.footprints(index)) else {
                // Every one was looked at: nothing to retry until a chunk
                // is resolved (or the queue is no longer stale). A pass
                // cut short (CQ full, batch full, gate paused) leaves this
                // unchanged, so the engine comes back for the rest.
                self.retried_at.store(resolved, Ordering::Relaxed);
                break;
            };
            let sqe = aside.sqe;
            if batch.full_before(&sqe) {
                break;
            }
            let Some(guard) = self.ctx.enter(platform) else { break };
            let now = engine::footprints(&guard, &sqe);
            if now != then {
                // Its region was unregistered (and maybe registered again)
                // since it was set aside: commands admitted past it may use
                // what is there now. It fails, touching nothing.
                drop(guard);
                set_aside.remove(index);
                self.ring.post_completion(sqe.user_data, uapi::WARPQ_STATUS_FAULT_UNREGISTERED, 0);
                batch.posted(&sqe, uapi::WARPQ_STATUS_FAULT_UNREGISTERED);
                continue;
            }
            if set_aside.blocks(index, &now) {
                drop(guard);
                index += 1;
                continue;
            }
            match self.execute_one(guard, &sqe, platform) {
                Step::Done { status, result } => {
                    set_aside.remove(index);
                    self.ring.post_completion(sqe.user_data, status, result);
                    batch.posted(&sqe, status);
                }
                Step::Waits(_) => index += 1,
            }
        }
    }

    /// Takes submissions from the ring: runs them, sets them aside, or
    /// leaves them there and holds the ring ([`SetAside::admit`]).
    pub(super) fn run_ring(
        &self,
        set_aside: &mut SetAside<Aside, SET_ASIDE_MAX>,
        platform: &QueuePlatform<'_>,
        batch: &mut CompletionBatch,
    ) {
        let mut held = false;
        while self.ring.cq_space() > 0 {
            let Some(sqe) = self.ring.peek_sqe() else { break };
            if batch.full_before(&sqe) {
                // The batch ends here; the pool comes back for the rest
                // after the device's other queues had theirs.
                break;
            }
            let Some(guard) = self.ctx.enter(platform) else { break };
            if !set_aside.is_empty() {
                let footprints = engine::footprints(&guard, &sqe);
                match set_aside.admit(sqe.flags & uapi::WARPQ_SQE_UNORDERED != 0, &footprints) {
                    Admission::Run => {}
                    Admission::Wait => {
                        held = true;
                        break;
                    }
                    Admission::SetAside => {
                        drop(guard);
                        // Room: `admit` said so.
                        let _ = set_aside.push(Aside { sqe, index: self.ring.take() }, footprints);
                        continue;
                    }
                }
            }
            match self.execute_one(guard, &sqe, platform) {
                Step::Done { status, result } => {
                    self.ring.post(sqe.user_data, status, result);
                    batch.posted(&sqe, status);
                }
                // Set aside until a rebuild maps its chunks; if the list is
                // full it stays first in the ring and the queue waits.
                Step::Waits(footprints) => {
                    if set_aside.is_full() {
                        held = true;
                        break;
                    }
                    let _ = set_aside.push(Aside { sqe, index: self.ring.take() }, footprints);
                }
            }
            // SAFETY: no precondition; the engine holds no spinlock here.
            unsafe { shim::warpq_cond_resched() };
        }
        self.ring_held.store(held, Ordering::Release);
    }

    /// Runs one command inside the gate (`guard`, left here). A command
    /// that needs an unmapped chunk asks for its rebuild and is not run:
    /// the queue is stale until the owner's WAIT (woken here if it waits)
    /// or the rebuild worker maps the chunks, or (worker off) the owner's
    /// next touch of the ring (zapped now) or ioctl. A worker whose
    /// rebuild fails queues the zap itself.
    pub(super) fn execute_one(
        &self,
        guard: EngineGuard<'_, DmaMapping, MAX_REGIONS, QueuePlatform<'_>>,
        sqe: &Sqe,
        platform: &QueuePlatform<'_>,
    ) -> Step {
        use crate::protocol::gate::EngineExit;
        match engine::execute(&guard, &self.dev, sqe) {
            engine::Execution::Done(outcome) => {
                let status = match guard.finish() {
                    EngineExit::Completed => outcome.status,
                    // A drain timed out and reset the queue while this
                    // command ran: its result is void; report that, never
                    // drop it.
                    EngineExit::Abandoned => uapi::WARPQ_STATUS_ABORTED,
                };
                let result = if status == uapi::WARPQ_STATUS_OK { outcome.result } else { 0 };
                Step::Done { status, result }
            }
            engine::Execution::NeedsRebuild { touched } => {
                let footprints = engine::footprints(&guard, sqe);
                let exit = guard.request_rebuild(touched);
                if self.ctx.gate().is_stale() {
                    self.note_stale();
                }
                if !self.call_rebuilder() {
                    platform.schedule_zap();
                }
                if exit == EngineExit::Abandoned {
                    // A reset abandoned the queue meanwhile: report it, as
                    // for a command that ran.
                    Step::Done { status: uapi::WARPQ_STATUS_ABORTED, result: 0 }
                } else {
                    Step::Waits(footprints)
                }
            }
        }
    }

    /// WARPQ_IOC_EVENTFD: the eventfd to signal per batch of completions
    /// (`None`: stop signalling).
    pub(crate) fn set_eventfd(&self, eventfd: Option<EventFd>) -> Result {
        self.check_live()?;
        let old = core::mem::replace(&mut *self.eventfd.lock(), eventfd);
        // Released outside E.
        drop(old);
        Ok(())
    }

    pub(super) fn signal_eventfd(&self) {
        if let Some(eventfd) = &*self.eventfd.lock() {
            eventfd.signal();
        }
    }

    /// Publishes the posted completions, then one wake-up for all of them
    /// (WAIT, poll and epoll, the eventfd).
    pub(super) fn publish_completions(&self, batch: &mut CompletionBatch) {
        let published = self.ring.publish();
        // Counted once visible: STATS never counts a completion user space
        // cannot see yet (the fuzzer takes its count for the kernel's index).
        for (status, n) in batch.statuses() {
            self.stats.completions(status, n);
            self.dev.stats.completions(status, n);
        }
        *batch = CompletionBatch::default();
        if published > 0 {
            self.signal_eventfd();
            self.wake_waiters();
        }
    }

    /// At shutdown: every submission still in the ring completes as aborted,
    /// and the ring says the queue is dead. At most one ring's worth: user
    /// space may keep publishing entries and consuming completions while
    /// this runs, and must not be able to keep the engine (and with it
    /// close, exit and unbind) here.
    pub(super) fn abort_pending(&self) {
        self.ring.set_flag(uapi::WARPQ_RING_DEAD, true);
        {
            // The set-aside commands first: they were submitted before
            // what is left in the ring.
            let mut set_aside = self.set_aside.lock();
            while self.ring.cq_space() > 0 {
                let Some(aside) = set_aside.remove(0) else { break };
                self.ring.post_completion(aside.sqe.user_data, uapi::WARPQ_STATUS_ABORTED, 0);
            }
            self.set_aside_len.store(set_aside.len() as u32, Ordering::Release);
            // What did not fit the CQ stays visible as not consumed.
            self.ring.hold_head(set_aside.get(0).map(|a| a.index));
        }
        for _ in 0..uapi::WARPQ_SQ_ENTRIES {
            if self.ring.cq_space() == 0 {
                break;
            }
            let Some(sqe) = self.ring.peek_sqe() else { break };
            self.ring.post(sqe.user_data, uapi::WARPQ_STATUS_ABORTED, 0);
        }
        let aborted = self.ring.publish();
        self.stats.completions(uapi::WARPQ_STATUS_ABORTED, u64::from(aborted));
        self.dev.stats.completions(uapi::WARPQ_STATUS_ABORTED, u64::from(aborted));
        if aborted > 0 {
            self.signal_eventfd();
        }
        self.wake_waiters();
    }
}

/// A command the engine set aside (`overtake.rs`) and where it was in the
/// ring: `sq_head` stays there until it completes ([`Ring::hold_head`]).
#[derive(Clone, Copy)]
pub(super) struct Aside {
    sqe: Sqe,
    index: u32,
}

/// How [`Queue::execute_one`] left a command.
pub(super) enum Step {
    /// It ran or failed: post this completion.
    Done { status: u32, result: u64 },
    /// It waits for a rebuild of chunks it needs: set it aside with the
    /// chunks it touches.
    Waits(Footprints),
}
