// SPDX-License-Identifier: GPL-2.0

//! References to an `mm_struct`.

use core::ptr::NonNull;

use crate::shim::{self, MmRaw, UserRaw};

/// The identity of an mm as the protocol core knows it (its address). Only
/// meaningful while some reference keeps the `mm_struct` allocated.
pub(crate) fn mm_id(mm: NonNull<MmRaw>) -> usize {
    mm.as_ptr() as usize
}

/// The calling task's mm, if it has one (kernel threads do not).
pub(crate) fn current_mm() -> Option<NonNull<MmRaw>> {
    // SAFETY: reading `current->mm` of the running task is always allowed.
    NonNull::new(unsafe { shim::warpq_current_mm() })
}

/// A long-term reference on an `mm_struct` (`mmgrab()`): keeps the
/// structure, not the address space, alive. Use `mmget_not_zero()` around
/// any use of the address space itself.
///
/// # Invariants
///
/// `mm` is a valid `mm_struct` on which this value holds an mmgrab reference.
pub(crate) struct MmGrab {
    mm: NonNull<MmRaw>,
}

// SAFETY: mm references may be taken and dropped on any thread.
unsafe impl Send for MmGrab {}
// SAFETY: only the (immutable) pointer is shared.
unsafe impl Sync for MmGrab {}

impl MmGrab {
    /// Takes a reference on `mm`.
    ///
    /// # Safety
    ///
    /// `mm` must be valid for the duration of the call (for example the
    /// faulting vma's `vm_mm`, or `current->mm`).
    pub(crate) unsafe fn new(mm: NonNull<MmRaw>) -> Self {
        // SAFETY: `mm` is valid (this function's contract).
        unsafe { shim::warpq_mmgrab(mm.as_ptr()) };
        // INVARIANT: the reference was just taken.
        Self { mm }
    }
}

impl MmGrab {
    /// The raw pointer, valid while `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut MmRaw {
        self.mm.as_ptr()
    }

    /// Whether the address space is still in use (the process has not
    /// exited or exec'd away from it).
    pub(crate) fn has_users(&self) -> bool {
        // SAFETY: the structure is valid (type invariant).
        unsafe { shim::warpq_mm_has_users(self.mm.as_ptr()) }
    }

    /// The mm's identity for the protocol core.
    pub(crate) fn id(&self) -> usize {
        mm_id(self.mm)
    }
}

impl Drop for MmGrab {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `new` (type invariant).
        unsafe { shim::warpq_mmdrop(self.mm.as_ptr()) };
    }
}

/// A reference on the calling task's `user_struct` (`get_uid()`), which the
/// `pin` backing charges its pins to.
///
/// # Invariants
///
/// `user` is a valid `user_struct` on which this value holds a reference.
pub(crate) struct UserRef {
    user: NonNull<UserRaw>,
}

// SAFETY: uid references may be taken and dropped on any thread.
unsafe impl Send for UserRef {}
// SAFETY: only the (immutable) pointer is shared; the charge is atomic.
unsafe impl Sync for UserRef {}

impl UserRef {
    /// The calling task's user.
    pub(crate) fn current() -> Self {
        // SAFETY: every task has credentials; get_uid() takes a reference.
        let user = unsafe { shim::warpq_current_user_get() };
        // INVARIANT: get_uid() never returns NULL and took a reference.
        Self { user: NonNull::new(user).expect("current_user() is never NULL") }
    }

    /// The raw pointer, valid while `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut UserRaw {
        self.user.as_ptr()
    }
}

impl Drop for UserRef {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `current` (type invariant).
        unsafe { shim::warpq_user_put(self.user.as_ptr()) };
    }
}
