// SPDX-License-Identifier: GPL-2.0

//! One queue: the state of one (device file, mm) pair — its shared ring and
//! a reference on its mm. Created by the first fault or ioctl of that mm, so
//! that after fork the child gets a queue of its own and never the parent's.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::prelude::*;

use crate::glue::mm::MmGrab;
use crate::ring::Ring;
use crate::shim::{MmRaw, PageRaw};

/// Queue identities as seen by user space (`owner_id` in the ring header):
/// never reused while the module is loaded.
static NEXT_OWNER_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct Queue {
    /// Keeps the `mm_struct` (not the address space) alive for the queue's
    /// lifetime, so its address stays a unique key in the file's directory.
    _mm: MmGrab,
    ring: Ring,
}

impl Queue {
    /// A queue for `mm`.
    ///
    /// # Safety
    ///
    /// `mm` must be valid for the duration of the call.
    pub(crate) unsafe fn new(mm: NonNull<MmRaw>) -> Result<Self> {
        let owner_id = NEXT_OWNER_ID.fetch_add(1, Ordering::Relaxed);
        let ring = Ring::new(owner_id)?;
        // SAFETY: `mm` is valid (this function's contract).
        let mm = unsafe { MmGrab::new(mm) };
        Ok(Self { _mm: mm, ring })
    }

    /// The page to map at page `index` of the queue mapping.
    pub(crate) fn ring_page(&self, index: usize) -> Option<NonNull<PageRaw>> {
        self.ring.page(index)
    }
}
