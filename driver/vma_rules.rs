// SPDX-License-Identifier: GPL-2.0

//! Which of a process's mappings the driver lets the device or its workers
//! touch:
//!
//! - A range that holds a queue mapping is never pinned or mirrored for the
//!   device: GUP (or `hmm_range_fault`) would fault the queue page, whose
//!   fault handler rebuilds, which pins again (unbounded recursion), and the
//!   device would write the ring. REGISTER of such a range fails `EFAULT`.
//! - The zap worker zaps only a vma that is still a queue mapping of the
//!   queue's own file: the address it remembered may have been unmapped and
//!   reused since.
//! - A `PROTECTION_VMA` invalidation keeps a device-writable chunk's write
//!   right only if every vma over it still grants write and none is
//!   registered for uffd-wp ([`range_keeps_write`], the `filtered` policy).

use core::ffi::c_void;
use core::ptr::NonNull;

use kernel::bindings;

use crate::glue::mm::{vmas_in, MmUsers, MmapLock, Vma};
use crate::shim::{self, MmRaw, RangeRaw};

/// Whether `vma` is a queue mapping (of the file whose `private_data` is
/// `file`, if given).
fn is_queue_mapping(vma: Vma, file: Option<*mut c_void>) -> bool {
    // SAFETY: returns the address of the shim's static ops table.
    vma.has_ops(unsafe { shim::warpq_queue_vm_ops() }, file)
}

/// Whether some vma in `[start, end)` of `mm` is a queue mapping: such a
/// range must not be pinned or mirrored (see the module docs).
///
/// # Safety
///
/// The caller holds `mm`'s mmap lock.
pub(crate) unsafe fn range_has_queue_mapping(mm: NonNull<MmRaw>, start: u64, end: u64) -> bool {
    // SAFETY: forwarded contract.
    unsafe { vmas_in(mm, start, end) }.any(|vma| is_queue_mapping(vma, None))
}

/// Zaps the queue mapping at `addr` in `mm` if it is still one of `file`'s,
/// so that the next touch faults. Runs in a worker, never inside an
/// invalidation callback (zapping starts a nested invalidation and takes
/// `i_mmap_rwsem`).
///
/// # Safety
///
/// `mm` stays allocated for the call (the queue's [`MmGrab`](crate::glue::mm::MmGrab)).
pub(crate) unsafe fn zap_queue_mapping(mm: NonNull<MmRaw>, addr: u64, file: *mut c_void) {
    // SAFETY: forwarded contract.
    let Some(users) = (unsafe { MmUsers::get(mm) }) else { return };
    // The write lock excludes a concurrent ->fault (which holds the read
    // lock between its stale check and the PTE install): either the fault
    // completes first and we zap its PTE, or it runs after us and rebuilds.
    let _lock = MmapLock::lock(&users, true);
    // SAFETY: the mmap lock is held until `_lock` is dropped, after the zap.
    let Some(vma) = (unsafe { vmas_in(mm, addr, addr.saturating_add(1)) }).next() else { return };
    let (start, end) = vma.bounds();
    if start <= addr && is_queue_mapping(vma, Some(file)) {
        // SAFETY: the vma is in `mm`'s tree and its write lock is held.
        unsafe { bindings::zap_page_range_single(vma.as_ptr(), start as _, (end - start) as _, core::ptr::null_mut()) };
    }
}

/// Whether every vma over `[start, end)` of `range`'s mm grants write and
/// none is registered for uffd-wp: a `PROTECTION_VMA` invalidation over it
/// (NUMA hinting's scans) took no write right away. `mprotect` sets
/// `vm_flags` before it changes the PTEs, so a write right it removes is
/// seen here. False when in doubt: the mmap lock not held, a hole, an empty
/// range.
///
/// # Safety
///
/// `range` is the invalidation callback's valid range.
pub(crate) unsafe fn range_keeps_write(range: *const RangeRaw, start: u64, end: u64) -> bool {
    // SAFETY: `range` is valid (this function's contract); its mm is the
    // mm being invalidated, alive for the callback.
    let Some(mm) = NonNull::new(unsafe { (*range.cast::<bindings::mmu_notifier_range>()).mm }) else { return false };
    let mm = mm.cast::<MmRaw>();
    // SAFETY: as above.
    if start >= end || !unsafe { shim::warpq_mmap_lock_held(mm.as_ptr()) } {
        return false;
    }
    let mut next = start;
    // SAFETY: the mmap lock is held (checked above) for the whole callback.
    for vma in unsafe { vmas_in(mm, start, end) } {
        let ((vm_start, vm_end), flags) = (vma.bounds(), vma.flags());
        if vm_start > next || flags & u64::from(bindings::VM_WRITE) == 0 || flags & u64::from(bindings::VM_UFFD_WP) != 0
        {
            return false;
        }
        next = vm_end;
    }
    next >= end
}
