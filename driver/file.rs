// SPDX-License-Identifier: GPL-2.0

//! One open `/dev/warpqN` file: the directory of its queues, one per mm.
//!
//! Lock order (this file owns D; queue.rs owns L):
//!   mmap_lock (held by the fault path) → D (`QueueFile::dir`) → L.
//! Nothing allocates with D held: a queue is built first, then inserted.

use core::ptr::NonNull;

use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::new_mutex;

use crate::device::DeviceCore;
use crate::glue::mm::mm_id;
use crate::protocol::context::{ContextTable, CreateError};
use crate::queue::Queue;
use crate::shim::MmRaw;

/// Queues (distinct mms: a process and its forked children) per open file.
pub(crate) const MAX_QUEUES_PER_FILE: usize = 64;

struct Directory {
    table: ContextTable<MAX_QUEUES_PER_FILE>,
    queues: [Option<Arc<Queue>>; MAX_QUEUES_PER_FILE],
}

#[pin_data]
pub(crate) struct QueueFile {
    pub(crate) dev: Arc<DeviceCore>,
    #[pin]
    dir: Mutex<Directory>,
}

impl Directory {
    /// Moves the queues whose process is gone (exit, exec) out of the
    /// directory into `out`: a file shared by many short-lived children
    /// (fork storms) does not fill up. Their pins were already released by
    /// the mm's own teardown (RELEASE/UNMAP invalidations).
    fn reap_orphans(&mut self, out: &mut [Option<Arc<Queue>>; MAX_QUEUES_PER_FILE]) {
        let Self { table, queues } = self;
        for (slot, out) in queues.iter_mut().zip(out.iter_mut()) {
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
                }),
            }),
            GFP_KERNEL,
        )
    }

    /// The queue of `mm`, created on first use. Never another mm's queue.
    ///
    /// # Safety
    ///
    /// `mm` must be valid for the duration of the call.
    pub(crate) unsafe fn queue_for(&self, mm: NonNull<MmRaw>) -> Result<Arc<Queue>> {
        let id = mm_id(mm);
        if let Some(queue) = self.lookup(id) {
            return Ok(queue);
        }
        // Build outside D (see the lock order above), then publish.
        let private = self as *const Self as *mut core::ffi::c_void;
        // SAFETY: `mm` is valid (this function's contract); `private` is this
        // file's `private_data` (the `Arc<QueueFile>` data pointer).
        let fresh = unsafe { Queue::new(self.dev.clone(), mm, private) }?;
        // Queues of processes that exited are dropped outside D, after this.
        let mut orphans = [const { None }; MAX_QUEUES_PER_FILE];
        let mut dir = self.dir.lock();
        dir.reap_orphans(&mut orphans);
        match dir.table.get_or_create(id) {
            Ok((slot, true)) => {
                dir.queues[slot.slot()] = Some(fresh.clone());
                Ok(fresh)
            }
            Ok((slot, false)) => dir.queues[slot.slot()].clone().ok_or(EINVAL),
            Err(CreateError::Full) => Err(EMFILE),
            Err(CreateError::Released(_)) => Err(ESRCH),
            Err(CreateError::InvalidMm) => Err(EINVAL),
        }
    }

    fn lookup(&self, id: usize) -> Option<Arc<Queue>> {
        use crate::protocol::context::Lookup;
        let dir = self.dir.lock();
        match dir.table.lookup(id) {
            Lookup::Live(slot) => dir.queues[slot.slot()].clone(),
            _ => None,
        }
    }

    /// Called when the file is released (no vma maps it any more, no ioctl
    /// runs): forgets every queue; each is freed when its last user drops it.
    pub(crate) fn release_all(&self) {
        let queues = {
            let mut dir = self.dir.lock();
            dir.table = ContextTable::new();
            core::mem::replace(&mut dir.queues, [const { None }; MAX_QUEUES_PER_FILE])
        };
        // Dropped outside D.
        drop(queues);
    }
}
