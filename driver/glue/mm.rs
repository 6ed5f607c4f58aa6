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

    /// The pointer, valid while `self` lives.
    pub(crate) fn non_null(&self) -> NonNull<MmRaw> {
        self.mm
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

/// Holds `mm`'s address space (`mmget_not_zero()`, released by `mmput()`).
///
/// # Invariants
///
/// `mm` is a valid `mm_struct` on which this value holds a user reference.
pub(crate) struct MmUsers {
    mm: NonNull<MmRaw>,
}

impl MmUsers {
    /// A user reference on `mm`, unless its last user is gone (the process
    /// exited or exec'd).
    ///
    /// # Safety
    ///
    /// `mm` stays allocated for the value's lifetime (an [`MmGrab`] holds it).
    pub(crate) unsafe fn get(mm: NonNull<MmRaw>) -> Option<Self> {
        // SAFETY: `mm` is allocated (this function's contract).
        // INVARIANT: the reference is taken only if this returns true.
        unsafe { shim::warpq_mmget_not_zero(mm.as_ptr()) }.then_some(Self { mm })
    }
}

impl Drop for MmUsers {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `get` (type invariant). Never the
        // last one under the mmap lock: the guards below are dropped first.
        unsafe { shim::warpq_mmput(self.mm.as_ptr()) };
    }
}

/// `mm`'s mmap lock, held for reading or writing until dropped.
pub(crate) struct MmapLock {
    mm: NonNull<MmRaw>,
    write: bool,
}

impl MmapLock {
    /// Takes `users`'s mmap lock, for writing if `write`.
    pub(crate) fn lock(users: &MmUsers, write: bool) -> Self {
        let mm = users.mm;
        // SAFETY: `users` holds the address space (its type invariant).
        unsafe {
            if write {
                shim::warpq_mmap_write_lock(mm.as_ptr());
            } else {
                shim::warpq_mmap_read_lock(mm.as_ptr());
            }
        }
        Self { mm, write }
    }
}

impl Drop for MmapLock {
    fn drop(&mut self) {
        // SAFETY: taken in `lock` in this mode, not released since.
        unsafe {
            if self.write {
                shim::warpq_mmap_write_unlock(self.mm.as_ptr());
            } else {
                shim::warpq_mmap_read_unlock(self.mm.as_ptr());
            }
        }
    }
}

/// One vma of an address space, as [`vmas_in`] found it: valid while the
/// mmap lock its caller holds is held (no reference to it is handed out:
/// other threads may change some of its fields under the read lock).
///
/// # Invariants
///
/// Only [`vmas_in`] makes one, and its caller's contract (the mmap lock
/// held while the vmas are used) covers every use of the methods below.
#[derive(Clone, Copy)]
pub(crate) struct Vma(NonNull<kernel::bindings::vm_area_struct>);

impl Vma {
    /// The raw pointer (for the kernel's functions on a vma).
    pub(crate) fn as_ptr(self) -> *mut kernel::bindings::vm_area_struct {
        self.0.as_ptr()
    }

    /// `[vm_start, vm_end)`.
    pub(crate) fn bounds(self) -> (u64, u64) {
        // SAFETY: a vma [`vmas_in`] found, under the mmap lock: its bounds
        // (a union with its RCU head, live while it is in the tree) do not
        // change under the lock.
        let bounds = unsafe { (*self.0.as_ptr()).__bindgen_anon_1.__bindgen_anon_1 };
        (bounds.vm_start as u64, bounds.vm_end as u64)
    }

    /// `vm_flags` (as the caller's mmap lock lets it see them).
    pub(crate) fn flags(self) -> u64 {
        // SAFETY: as in `bounds`; the flags are written under the write lock.
        unsafe { (*self.0.as_ptr()).__bindgen_anon_2.vm_flags as u64 }
    }

    /// Whether the vma's operations are `ops` and its private data `data`
    /// (`None`: any).
    pub(crate) fn has_ops(
        self,
        ops: *const kernel::bindings::vm_operations_struct,
        data: Option<*mut core::ffi::c_void>,
    ) -> bool {
        // SAFETY: as in `bounds`; both fields are set at mmap and not changed.
        let (vm_ops, private) = unsafe { ((*self.0.as_ptr()).vm_ops, (*self.0.as_ptr()).vm_private_data) };
        core::ptr::eq(vm_ops, ops) && data.map_or(true, |data| private == data)
    }
}

/// The vmas of `mm` that intersect `[start, end)`, in address order
/// (`find_vma`).
///
/// # Safety
///
/// The caller holds `mm`'s mmap lock while it iterates and uses the vmas.
pub(crate) unsafe fn vmas_in(mm: NonNull<MmRaw>, start: u64, end: u64) -> impl Iterator<Item = Vma> {
    let mut next = start;
    core::iter::from_fn(move || {
        if next >= end {
            return None;
        }
        // SAFETY: the mmap lock is held (this function's contract), so
        // `find_vma` may walk the tree and its result stays valid.
        let vma = Vma(NonNull::new(unsafe { kernel::bindings::find_vma(mm.as_ptr().cast(), next as _) })?);
        let (vm_start, vm_end) = vma.bounds();
        if vm_start >= end {
            return None;
        }
        next = vm_end;
        Some(vma)
    })
}
