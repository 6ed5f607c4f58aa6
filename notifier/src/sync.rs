// SPDX-License-Identifier: GPL-2.0

//! Synchronization primitives used by the protocol core.
//!
//! Under `cfg(loom)` these are loom's, so the loom models explore every
//! interleaving and check every access to protocol-guarded data; otherwise
//! they are `core`'s. Nothing here takes a lock: the per-context lock `L`
//! belongs to the caller (the kernel's mutex, or a loom/std mutex in tests).

#[cfg(loom)]
pub use loom::cell::UnsafeCell;
#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// A cell for data that is guarded by the protocol rather than by a lock.
///
/// Same closure API as `loom::cell::UnsafeCell`: the pointer handed to the
/// closure is valid only inside it. Under loom each call is recorded, so a
/// read that is not ordered after a write (or the other way round) fails the
/// model.
#[cfg(not(loom))]
#[repr(transparent)]
pub struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    /// Wraps `data`.
    pub const fn new(data: T) -> Self {
        Self(core::cell::UnsafeCell::new(data))
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0.into_inner()
    }

    /// Runs `f` with a shared pointer to the value.
    ///
    /// The caller's protocol must exclude concurrent writers while `f` uses
    /// the pointer.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a unique pointer to the value.
    ///
    /// The caller's protocol must exclude every other access while `f` uses
    /// the pointer.
    #[inline]
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
