// SPDX-License-Identifier: GPL-2.0

//! The engine pool of one device: a fixed set of kernel threads (module
//! parameter `engine_threads`, default the online CPUs; started at probe,
//! stopped at unbind) that run the commands of every queue of the device.
//! A queue costs no thread: creating one adds it to the pool's list.
//!
//! # Scheduling
//!
//! A worker makes passes over the list, starting one queue further each
//! pass. For each queue with work (submissions or set-aside commands to
//! retry, CQ room, a gate that admits the engine: `Queue::engine_has_work`) it
//! *claims* the queue, runs one batch of its commands (at most 32, or
//! 256 KiB of work: `ring::CompletionBatch`), publishes the batch and lets
//! the queue go. So every queue with work gets a batch per pass, whichever
//! worker runs it: a busy queue cannot starve another. The claim makes a
//! queue's engine one thread at a time, as the protocol's gate and the
//! ring's single producer require; its acquire/release orders one worker's
//! work on a queue before the next worker's.
//!
//! # Sleeping
//!
//! The protocol below is the protocol core's (`notifier/src/pool.rs`,
//! model-checked by loom models 13 to 15); this file runs it.
//!
//! A worker whose pass found no work polls for `engine_idle_us` if no
//! other worker polls (one poller at a time, so idle workers leave the CPUs
//! to the submitting processes), else at once, sleeps on the pool's wait
//! queue until a *kick* (WAKE, SUBMIT, REGISTER, a rebuild or callback that
//! resumes a queue: every wake-up of a queue but the engine's own
//! completions) or `kthread_stop`.
//! The last worker to fall asleep first sets `WARPQ_RING_NEED_WAKEUP` on
//! every queue (SeqCst) and looks once more for work: a submitter that
//! publishes its tail and then (after its own SeqCst fence) reads no flag
//! is seen by that look, as with the per-queue engine before. The first
//! worker to wake clears the flags. A queue added while every worker
//! sleeps gets the flag at once.
//!
//! # Lock P and queue lifetime
//!
//! P (`EnginePool::queues`; the lock order table is in queue.rs) guards the
//! list of queue pointers. A worker claims a queue under P; a queue leaves
//! the list under P (its drop, or unbind's revocation) and then waits for
//! the claim to end, so a worker never touches a queue that is gone.
//! Nothing is taken under P; P is taken under F (revocation).

use core::sync::atomic::{fence, Ordering};

use kernel::alloc::KVec;
use kernel::bindings;
use kernel::ffi::{c_int, c_void};
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::Mutex;
use kernel::types::Opaque;

use crate::device::DeviceCore;
use crate::protocol::pool::PoolState;
use crate::queue::{now_ns, Queue};
use crate::shim::{self, TaskRaw};

/// The engine threads' shared state (in the `DeviceCore`).
#[pin_data]
pub(crate) struct EnginePool {
    /// P: the device's queues (their pointers; see the module docs).
    #[pin]
    queues: Mutex<KVec<*const Queue>>,
    /// Sleeping workers.
    #[pin]
    wq: Opaque<bindings::wait_queue_head>,
    /// Kicks, workers awake, the poller's place: the protocol core's
    /// sleep protocol (`notifier/src/pool.rs`, loom models 13 to 15).
    state: PoolState,
}

// SAFETY: the queue pointers are only dereferenced under the rules in the
// module docs (claimed under P; removal waits for the claim); the rest is
// Send + Sync.
unsafe impl Send for EnginePool {}
// SAFETY: as above.
unsafe impl Sync for EnginePool {}

impl EnginePool {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            queues <- new_mutex!(KVec::new()),
            // SAFETY: `slot` is pinned memory for a wait queue head.
            wq <- Opaque::ffi_init(|slot| unsafe { shim::warpq_waitqueue_init(slot) }),
            state: PoolState::new(),
        })
    }

    /// Adds a queue (at its creation, outside D and L). It must call
    /// [`EnginePool::remove`] before it is freed.
    pub(crate) fn add(&self, queue: &Queue) -> Result {
        let mut queues = self.queues.lock();
        queues.push(queue as *const Queue, GFP_KERNEL)?;
        // Under P, so the last worker falling asleep either saw this queue
        // in its pass over the list or left `awake` at 0 for us to see.
        if self.state.all_asleep() {
            queue.set_need_wakeup(true);
        }
        Ok(())
    }

    /// Takes a queue out of the list (no worker claims it after this);
    /// false if it was not in it. The caller then waits for a running
    /// claim to end ([`Queue::engine_claimed`]).
    pub(crate) fn remove(&self, queue: &Queue) -> bool {
        let mut queues = self.queues.lock();
        let Some(i) = queues.iter().position(|&q| core::ptr::eq(q, queue)) else { return false };
        let last = queues.len() - 1;
        queues.swap(i, last);
        // SAFETY: shrinks by one; the dropped entry is a plain pointer.
        unsafe { queues.set_len(last) };
        true
    }

    /// Something may have work for the engine: wake sleeping workers.
    pub(crate) fn kick(&self) {
        self.state.kick();
        // SAFETY: initialised in `new`.
        unsafe { shim::warpq_wake_up_all(self.wq.get()) };
    }

    /// The body of one worker thread, until `kthread_stop`.
    fn run_worker(&self) {
        self.state.worker_started();
        let mut cursor = 0usize;
        let mut polling = false;
        let mut idle_since = now_ns();
        loop {
            // SAFETY: called from the kthread itself.
            if unsafe { bindings::kthread_should_stop() } {
                break;
            }
            let ran = self.pass(cursor);
            cursor = cursor.wrapping_add(1);
            if ran {
                idle_since = now_ns();
            } else {
                if !polling {
                    polling = self.state.try_poll();
                    idle_since = now_ns();
                }
                // SAFETY: reads a module parameter.
                let idle_ns = u64::from(unsafe { shim::warpq_param_engine_idle_us() }) * 1000;
                if polling && now_ns().saturating_sub(idle_since) < idle_ns {
                    // SAFETY: no precondition (a pause instruction).
                    unsafe { shim::warpq_cpu_relax() };
                } else {
                    if polling {
                        self.state.stop_poll();
                        polling = false;
                    }
                    self.sleep();
                    idle_since = now_ns();
                }
            }
            // SAFETY: no precondition; no lock is held here.
            unsafe { shim::warpq_cond_resched() };
        }
        if polling {
            self.state.stop_poll();
        }
        self.state.worker_stopped();
    }

    /// One pass over the queues from `cursor`: a batch of each one with
    /// work that no other worker runs. Whether any ran.
    fn pass(&self, cursor: usize) -> bool {
        let count = self.queues.lock().len();
        let mut ran = false;
        for k in 0..count {
            let claimed = {
                let queues = self.queues.lock();
                if queues.is_empty() {
                    break;
                }
                let at = queues[cursor.wrapping_add(k) % queues.len()];
                // SAFETY: a queue in the list is alive (it removes itself
                // under P before it goes).
                let queue = unsafe { &*at };
                (queue.engine_has_work() && queue.claim_engine()).then_some(at)
            };
            if let Some(at) = claimed {
                // SAFETY: claimed under P: its removal waits for the claim
                // to end before the queue can go.
                let queue = unsafe { &*at };
                queue.run_engine_batch();
                queue.release_engine();
                ran = true;
            }
        }
        ran
    }

    /// Whether some queue has work now.
    fn any_work(&self) -> bool {
        let queues = self.queues.lock();
        // SAFETY: as in `pass`: alive while listed (P is held).
        queues.iter().any(|&q| unsafe { &*q }.engine_has_work())
    }

    fn set_need_wakeup_all(&self, on: bool) {
        let queues = self.queues.lock();
        for &q in queues.iter() {
            // SAFETY: as in `pass`: alive while listed (P is held).
            unsafe { &*q }.set_need_wakeup(on);
        }
    }

    /// Sleeps until a kick or `kthread_stop` (see the module docs).
    fn sleep(&self) {
        let sleep = self.state.begin_sleep();
        if sleep.last {
            self.set_need_wakeup_all(true);
        }
        // After the flags (a full barrier, as in loom model 13): a
        // submitter that saw none published its tail before them.
        fence(Ordering::SeqCst);
        if !self.any_work() {
            let cond = || self.state.kicked_since(&sleep);
            let cond: &dyn Fn() -> bool = &cond;
            // SAFETY: the wait queue was initialised in `new`; `cond`
            // outlives the call. kthread_stop() wakes the thread and the
            // shim's condition includes kthread_should_stop().
            unsafe {
                shim::warpq_wait_event_interruptible(
                    self.wq.get(),
                    crate::queue::call_cond,
                    &cond as *const &dyn Fn() -> bool as *const c_void,
                )
            };
        }
        if self.state.end_sleep() {
            self.set_need_wakeup_all(false);
        }
    }
}

/// The device's engine threads; stopped on drop.
pub(crate) struct EngineThreads {
    tasks: KVec<*mut TaskRaw>,
}

// SAFETY: the task pointers are only used to stop the threads, once.
unsafe impl Send for EngineThreads {}
// SAFETY: as above.
unsafe impl Sync for EngineThreads {}

impl EngineThreads {
    /// Starts `engine_threads` workers on `core`'s pool.
    ///
    /// # Safety
    ///
    /// `core` outlives the returned value (whose drop stops the threads).
    pub(crate) unsafe fn start(core: &DeviceCore) -> Result<Self> {
        // SAFETY: reads a module parameter (0 there: the online CPUs).
        let count = unsafe { shim::warpq_param_engine_threads() }.max(1) as usize;
        let mut threads = Self { tasks: KVec::with_capacity(count, GFP_KERNEL)? };
        for _ in 0..count {
            let mut err: c_int = 0;
            // SAFETY: `core` outlives the thread (this function's contract:
            // `Drop` stops it first). The name is a NUL-terminated literal.
            let task = unsafe {
                shim::warpq_kthread_run(
                    engine_worker,
                    core as *const DeviceCore as *mut c_void,
                    c"warpq-engine".as_ptr().cast(),
                    &mut err,
                )
            };
            if task.is_null() {
                // `threads` stops the ones already running.
                return Err(kernel::error::Error::from_errno(err));
            }
            // Room reserved above: cannot fail.
            threads.tasks.push(task, GFP_KERNEL)?;
        }
        Ok(threads)
    }

    /// How many engine threads run.
    pub(crate) fn count(&self) -> usize {
        self.tasks.len()
    }
}

impl Drop for EngineThreads {
    fn drop(&mut self) {
        for &task in self.tasks.iter() {
            // SAFETY: a running kthread of ours, stopped once; kthread_stop()
            // waits for it to exit.
            unsafe { bindings::kthread_stop(task.cast()) };
        }
    }
}

unsafe extern "C" fn engine_worker(data: *mut c_void) -> c_int {
    // SAFETY: `EngineThreads::start` passed the device core, which outlives
    // the thread.
    let core = unsafe { &*(data as *const DeviceCore) };
    core.pool.run_worker();
    0
}
