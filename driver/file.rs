// SPDX-License-Identifier: GPL-2.0

//! One open `/dev/warpqN` file: the directory of its queues, one per mm.
//!
//! D (`QueueFile::dir`) in the lock order: the table at the top of queue.rs.

use core::ptr::NonNull;

use kernel::bindings;
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::types::Opaque;

use crate::device::DeviceCore;
use crate::glue::mm::mm_id;
use crate::protocol::context::{ContextTable, CreateError};
use crate::queue::Queue;
use crate::shim::MmRaw;

/// Queues (distinct mms: a process and its forked children) per open file.
pub(crate) const MAX_QUEUES_PER_FILE: usize = 64;

/// Queues waiting for a drop outside the mmap lock: each queue of the file
/// can be left there once (reaped, or a fault's last reference), plus the
/// queues built by faults that lost a race to publish theirs.
const GRAVEYARD_SLOTS: usize = 2 * MAX_QUEUES_PER_FILE;

struct Directory {
    table: ContextTable<MAX_QUEUES_PER_FILE>,
    queues: [Option<Arc<Queue>>; MAX_QUEUES_PER_FILE],
    /// Queues to drop later, outside any mmap lock: dropping one stops its
    /// kthread, removes its notifiers and waits for its zap work, which must
    /// not happen under the faulting process's mmap lock.
    graveyard: [Option<Arc<Queue>>; GRAVEYARD_SLOTS],
}

/// Where `queue_for` runs: the fault path holds the faulting mm's mmap lock.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    Fault,
    Ioctl,
}

#[pin_data]
pub(crate) struct QueueFile {
    pub(crate) dev: Arc<DeviceCore>,
    #[pin]
    dir: Mutex<Directory>,
    /// Where `poll`/`epoll` wait on this file: the file's, not a queue's,
    /// because an epoll entry lives as long as the file and a queue may go
    /// before it (reaped, revoked). Every queue of the file wakes it.
    #[pin]
    poll_wq: Opaque<bindings::wait_queue_head>,
}

impl Directory {
    /// Moves the queues whose process is gone (exit, exec) out of the
    /// directory into the graveyard: a file shared by many short-lived
    /// children (fork storms) does not fill up. Their pins were already
    /// released by the mm's own teardown (UNMAP invalidations).
    fn reap_orphans(&mut self) {
        let Self { table, queues, graveyard } = self;
        for (slot, out) in queues.iter_mut().zip(graveyard.iter_mut()) {
            if out.is_some() {
                continue;
            }
            if slot.as_ref().is_some_and(|q| q.is_orphaned()) {
                if let Some(q) = slot.take() {
                    let mm = q.mm_id();
                    table.release(mm);
                    if let crate::protocol::context::Lookup::Released(id) = table.lookup(mm) {
                        let _ = table.reap(id);
                    }
                    *out = Some(q);
                }
            }
        }
    }
}

impl QueueFile {
    pub(crate) fn new(dev: Arc<DeviceCore>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                dev,
                dir <- new_mutex!(Directory {
                    table: ContextTable::new(),
                    queues: [const { None }; MAX_QUEUES_PER_FILE],
                    graveyard: [const { None }; GRAVEYARD_SLOTS],
                }),
                // SAFETY: `slot` is pinned memory for a wait queue head.
                poll_wq <- Opaque::ffi_init(|slot| unsafe { crate::shim::warpq_waitqueue_init(slot) }),
            }),
            GFP_KERNEL,
        )
    }

    /// The queue of `mm`, created on first use. Never another mm's queue.
    ///
    /// # Safety
    ///
    /// `mm` must be valid for the duration of the call.
    pub(crate) unsafe fn queue_for(&self, mm: NonNull<MmRaw>, caller: Caller) -> Result<Arc<Queue>> {
        let id = mm_id(mm);
        if self.dev.gone.load(core::sync::atomic::Ordering::SeqCst) {
            // A touch of the mapping finds its revoked queue's ring; ioctls
            // and everything new get ENODEV.
            return match caller {
                Caller::Fault => self.lookup(id).ok_or(ENODEV),
                Caller::Ioctl => Err(ENODEV),
            };
        }
        if caller == Caller::Ioctl {
            self.bury_the_dead();
        }
        if let Some(queue) = self.lookup(id) {
            return Ok(queue);
        }
        // Build outside D (the lock order in queue.rs), then publish.
        let private = self as *const Self as *mut core::ffi::c_void;
        // SAFETY: `mm` is valid (this function's contract); `private` is this
        // file's `private_data` (the `Arc<QueueFile>` data pointer).
        let fresh = unsafe { Queue::new(self.dev.clone(), mm, private) }?;
        let mut dir = self.dir.lock();
        // Re-checked under D: `revoke_all` sets `gone` before it empties the
        // directories (under D), so no queue is added behind its back.
        if self.dev.gone.load(core::sync::atomic::Ordering::SeqCst) {
            if let Some(grave) = dir.graveyard.iter_mut().find(|g| g.is_none()) {
                *grave = Some(fresh);
            }
            return Err(ENODEV);
        }
        dir.reap_orphans();
        match dir.table.get_or_create(id) {
            Ok((slot, true)) => {
                dir.queues[slot.slot()] = Some(fresh.clone());
                Ok(fresh)
            }
            Ok((slot, false)) => {
                // Another thread of this mm won the race: ours goes to the
                // graveyard if there is room (else it is dropped here).
                if let Some(grave) = dir.graveyard.iter_mut().find(|g| g.is_none()) {
                    *grave = Some(fresh);
                }
                dir.queues[slot.slot()].clone().ok_or(EINVAL)
            }
            Err(CreateError::Full) => Err(EMFILE),
            Err(CreateError::Released(_)) => Err(ESRCH),
            Err(CreateError::InvalidMm) => Err(EINVAL),
        }
    }

    /// The file's poll wait queue (see the field).
    pub(crate) fn poll_wq(&self) -> *mut bindings::wait_queue_head {
        self.poll_wq.get()
    }

    /// Wakes the file's pollers, if any.
    pub(crate) fn wake_pollers(&self) {
        // SAFETY: initialised in `new`.
        unsafe { crate::shim::warpq_wake_up_pollers(self.poll_wq.get()) };
    }

    /// The queue of `mm` if it exists; never creates one.
    ///
    /// # Safety
    ///
    /// `mm` must be valid for the duration of the call.
    pub(crate) unsafe fn existing_queue(&self, mm: NonNull<MmRaw>) -> Option<Arc<Queue>> {
        self.lookup(mm_id(mm))
    }

    /// Keeps the last reference to `queue` for a drop outside the mmap lock.
    /// The fault path calls this when unbind or close released the file's
    /// queues while it used one: dropping the queue there would wait for its
    /// zap work, which needs the mmap lock the fault holds. The next ioctl
    /// or the file's release drops it.
    pub(crate) fn bury_later(&self, queue: Arc<Queue>) {
        let mut dir = self.dir.lock();
        if let Some(grave) = dir.graveyard.iter_mut().find(|g| g.is_none()) {
            *grave = Some(queue);
            return;
        }
        drop(dir);
        // Every queue of the file fits (see `GRAVEYARD_SLOTS`); more means
        // a bookkeeping bug, which should show rather than hang.
        pr_warn!("warpq: graveyard full, dropping a queue on the fault path\n");
        drop(queue);
    }

    /// Drops the graveyard's queues (outside D; never on the fault path).
    fn bury_the_dead(&self) {
        let dead = {
            let mut dir = self.dir.lock();
            core::mem::replace(&mut dir.graveyard, [const { None }; GRAVEYARD_SLOTS])
        };
        drop(dead);
    }

    fn lookup(&self, id: usize) -> Option<Arc<Queue>> {
        use crate::protocol::context::Lookup;
        let dir = self.dir.lock();
        match dir.table.lookup(id) {
            Lookup::Live(slot) => dir.queues[slot.slot()].clone(),
            _ => None,
        }
    }

    /// Unbind: revokes every queue of the file (see `Queue::revoke`), also
    /// those a WAIT, SUBMIT or fault still holds, and forgets them. Runs
    /// under F.
    ///
    /// The revoked queues stay in the directory until the file is released:
    /// they hold no pins, mappings or engine any more, only their ring, which
    /// a touch of the queue mapping still finds (DEAD in its header) instead
    /// of a SIGBUS.
    pub(crate) fn revoke_all(&self) {
        let (queues, dead) = {
            let mut dir = self.dir.lock();
            let live: [Option<Arc<Queue>>; MAX_QUEUES_PER_FILE] = core::array::from_fn(|i| dir.queues[i].clone());
            (live, core::mem::replace(&mut dir.graveyard, [const { None }; GRAVEYARD_SLOTS]))
        };
        for queue in Iterator::chain(queues.iter(), dead.iter()).flatten() {
            queue.revoke();
        }
    }

    /// Adds this file's live queues to `out`, for the debugfs `queues`
    /// list: copied under D without allocating, pushed after D is released;
    /// the caller describes and drops them outside every lock.
    pub(crate) fn live_queues(&self, out: &mut KVec<Arc<Queue>>) -> Result {
        let live: [Option<Arc<Queue>>; MAX_QUEUES_PER_FILE] = {
            let dir = self.dir.lock();
            core::array::from_fn(|i| dir.queues[i].clone())
        };
        for queue in live.into_iter().flatten() {
            out.push(queue, GFP_KERNEL)?;
        }
        Ok(())
    }

    /// Empties the directory and the graveyard (under D) for a drop outside it.
    #[allow(clippy::type_complexity)]
    fn take_all(&self) -> ([Option<Arc<Queue>>; MAX_QUEUES_PER_FILE], [Option<Arc<Queue>>; GRAVEYARD_SLOTS]) {
        let mut dir = self.dir.lock();
        dir.table = ContextTable::new();
        (
            core::mem::replace(&mut dir.queues, [const { None }; MAX_QUEUES_PER_FILE]),
            core::mem::replace(&mut dir.graveyard, [const { None }; GRAVEYARD_SLOTS]),
        )
    }

    /// Called when the file is released (no vma maps it any more, no ioctl
    /// runs): forgets every queue; each is freed when its last user drops it.
    pub(crate) fn release_all(&self) {
        // Dropped outside D.
        drop(self.take_all());
    }
}
