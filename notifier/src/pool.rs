// SPDX-License-Identifier: GPL-2.0

//! The engine pool's sleep protocol and queue claims (the driver's
//! `pool.rs` runs them; the loom models check them).
//!
//! A device has a few engine workers serving many queues. Each queue's
//! ring has a need-wakeup flag its submitter reads after publishing its
//! tail (and a SeqCst fence): set, the submitter makes the WAKE system call,
//! which *kicks* the pool. The pool must never sleep with work that nobody
//! will kick it for:
//!
//! 1. a worker about to sleep reads the kick count ([`PoolState::begin_sleep`]);
//! 2. the last worker to fall asleep sets every queue's flag (SeqCst), then
//!    (after a SeqCst fence) looks at every queue's tail once more, and
//!    stays awake if it finds work;
//! 3. otherwise it sleeps until the kick count moves ([`PoolState::kicked_since`]);
//! 4. the first worker to wake clears the flags ([`PoolState::end_sleep`]).
//!
//! Why no wake-up is lost: the last sleeper stores a flag, fences and then
//! loads the tail; the submitter stores the tail, fences and then loads the
//! flag (Dekker's pattern); so at least one sees the other's store. A worker that is not the last
//! sleeper leaves another awake, which polls.
//!
//! A claim makes a queue's engine one worker at a time: taken with acquire,
//! given back with release, so one worker's work on the ring happens before
//! the next one's.

use super::sync::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The pool's shared state (one per device).
pub struct PoolState {
    kicks: AtomicU64,
    awake: AtomicU32,
    polling: AtomicBool,
}

/// What [`PoolState::begin_sleep`] returns: the kick count then, and
/// whether this worker was the last one awake (it must set every queue's
/// need-wakeup flag, then look for work once more).
#[derive(Clone, Copy, Debug)]
pub struct Sleep {
    seen: u64,
    /// The last worker awake.
    pub last: bool,
}

impl Default for PoolState {
    fn default() -> Self {
        Self::new()
    }
}

impl PoolState {
    /// No worker yet, none awake.
    pub fn new() -> Self {
        Self { kicks: AtomicU64::new(0), awake: AtomicU32::new(0), polling: AtomicBool::new(false) }
    }

    /// A worker starts (awake).
    pub fn worker_started(&self) {
        self.awake.fetch_add(1, Ordering::SeqCst);
    }

    /// A worker stops.
    pub fn worker_stopped(&self) {
        self.awake.fetch_sub(1, Ordering::SeqCst);
    }

    /// Every worker sleeps (or none runs): a queue added now must get its
    /// need-wakeup flag at once. Ask under the lock that guards the queue
    /// list, which the last sleeper takes to set the flags.
    pub fn all_asleep(&self) -> bool {
        self.awake.load(Ordering::SeqCst) == 0
    }

    /// Something may have work for the pool (the caller then wakes the
    /// workers' wait queue).
    pub fn kick(&self) {
        self.kicks.fetch_add(1, Ordering::SeqCst);
    }

    /// Step 1 (module docs).
    pub fn begin_sleep(&self) -> Sleep {
        let seen = self.kicks.load(Ordering::SeqCst);
        let last = self.awake.fetch_sub(1, Ordering::SeqCst) == 1;
        Sleep { seen, last }
    }

    /// Step 3: a kick came since `sleep` began.
    pub fn kicked_since(&self, sleep: &Sleep) -> bool {
        self.kicks.load(Ordering::SeqCst) != sleep.seen
    }

    /// Step 4: awake again; true for the first worker awake (it clears the
    /// need-wakeup flags).
    pub fn end_sleep(&self) -> bool {
        self.awake.fetch_add(1, Ordering::SeqCst) == 0
    }

    /// Takes the one poller's place (an idle worker polls only with it).
    pub fn try_poll(&self) -> bool {
        self.polling.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Gives the poller's place back.
    pub fn stop_poll(&self) {
        self.polling.store(false, Ordering::Release);
    }
}

/// A queue's engine claim: one worker at a time.
pub struct EngineClaim(AtomicBool);

impl Default for EngineClaim {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineClaim {
    /// Unclaimed.
    pub fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    /// Claims the engine; false if another worker has it. Acquire: the
    /// previous holder's work happens before ours.
    pub fn try_claim(&self) -> bool {
        self.0.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Gives it back (release: pairs with the next claim).
    pub fn release(&self) {
        self.0.store(false, Ordering::Release);
    }

    /// Some worker holds it (a queue leaving the pool waits for this).
    pub fn is_claimed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
