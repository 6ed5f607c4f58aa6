// SPDX-License-Identifier: GPL-2.0

//! An eventfd a queue signals once per batch of completions it publishes
//! (`WARPQ_IOC_EVENTFD`).

use core::ptr::NonNull;

use kernel::ffi::c_void;
use kernel::prelude::*;

use crate::shim;

/// A reference to an `eventfd_ctx`, dropped with it.
///
/// # Invariants
///
/// `ctx` came from `eventfd_ctx_fdget` and this value owns that reference.
pub(crate) struct EventFd {
    ctx: NonNull<c_void>,
}

// SAFETY: an eventfd context is reference counted and may be signalled and
// released from any task.
unsafe impl Send for EventFd {}

impl EventFd {
    /// The eventfd behind descriptor `fd` of the calling task (EBADF, or
    /// EINVAL for a file that is not an eventfd).
    pub(crate) fn from_fd(fd: i32) -> Result<Self> {
        let mut ctx = core::ptr::null_mut();
        // SAFETY: `ctx` is a valid out pointer; called from an ioctl, so the
        // descriptor table is the caller's.
        let ret = unsafe { shim::warpq_eventfd_get(fd, &mut ctx) };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: a reference from `eventfd_ctx_fdget`, ours now.
        Ok(Self { ctx: NonNull::new(ctx).ok_or(EINVAL)? })
    }

    /// Adds 1 to the eventfd's counter and wakes its readers. Callable
    /// under a spinlock (the eventfd's own lock is an irq-safe spinlock).
    pub(crate) fn signal(&self) {
        // SAFETY: a live reference (type invariant).
        unsafe { shim::warpq_eventfd_signal(self.ctx.as_ptr()) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: our reference (type invariant), released once.
        unsafe { shim::warpq_eventfd_put(self.ctx.as_ptr()) };
    }
}
