// SPDX-License-Identifier: GPL-2.0

//! A sleeping lock over the kernel's `struct mutex` with `try_lock`.
//!
//! 6.12's `kernel::sync::Mutex` has no `try_lock`, which the invalidate
//! callback needs when it must not sleep (the OOM reaper's non-blockable
//! invalidations). All locks of this type share one lockdep class,
//! "warpq_queue_lock", made by the shim: use it for the queue lock L only,
//! and `kernel::sync::Mutex` for anything else.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

use kernel::bindings;
use kernel::init::PinInit;
use kernel::prelude::*;
use kernel::types::Opaque;

use crate::shim;

/// A mutex protecting a `T`.
#[pin_data]
pub(crate) struct KMutex<T> {
    #[pin]
    raw: Opaque<bindings::mutex>,
    data: UnsafeCell<T>,
}

// SAFETY: the mutex hands out access to `data` to one thread at a time.
unsafe impl<T: Send> Send for KMutex<T> {}
// SAFETY: as above; `T: Send` suffices since access is exclusive.
unsafe impl<T: Send> Sync for KMutex<T> {}

impl<T> KMutex<T> {
    /// An initialiser for a mutex holding `data`.
    pub(crate) fn new(data: T) -> impl PinInit<Self> {
        pin_init!(Self {
            data: UnsafeCell::new(data),
            // SAFETY: `slot` is valid for writes and pinned; mutex_init()
            // initialises it in place.
            raw <- Opaque::ffi_init(|slot| unsafe { shim::warpq_mutex_init(slot) }),
        })
    }

    /// Takes the mutex, sleeping if needed.
    pub(crate) fn lock(&self) -> KMutexGuard<'_, T> {
        // SAFETY: `raw` was initialised by `new` and is pinned.
        unsafe { bindings::mutex_lock(self.raw.get()) };
        KMutexGuard { lock: self }
    }

    /// Takes the mutex if it is free; never sleeps.
    pub(crate) fn try_lock(&self) -> Option<KMutexGuard<'_, T>> {
        // SAFETY: `raw` was initialised by `new` and is pinned.
        if unsafe { bindings::mutex_trylock(self.raw.get()) } != 0 {
            Some(KMutexGuard { lock: self })
        } else {
            None
        }
    }
}

/// Proof that the mutex is held; unlocks on drop.
pub(crate) struct KMutexGuard<'a, T> {
    lock: &'a KMutex<T>,
}

impl<T> Deref for KMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the mutex is held.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for KMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the mutex is held, and `&mut
        // self` makes this the only reference through it.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for KMutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard's existence means this thread holds the mutex.
        unsafe { bindings::mutex_unlock(self.lock.raw.get()) };
    }
}
