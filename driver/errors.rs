// SPDX-License-Identifier: GPL-2.0

//! How the protocol core's errors read in the kernel, and the kernel's
//! errors in the protocol core: `From` impls, so that `?` does the mapping.
//!
//! - [`RegionError`] → an errno for REGISTER and UNREGISTER.
//! - [`RebuildError`] → an errno for WAIT, WAKE and the rebuild tracepoint.
//! - A GUP or `hmm_range_fault()` errno ([`FaultErrno`]) → [`PinError`]:
//!   what the rebuild does about it.

use core::ffi::c_long;

use kernel::bindings;
use kernel::prelude::*;

use crate::protocol::platform::PinError;
use crate::protocol::rebuild::RebuildError;
use crate::protocol::region::RegionError;

impl From<RegionError> for Error {
    fn from(e: RegionError) -> Self {
        match e {
            RegionError::Busy => EBUSY,
            RegionError::NoSuchRegion => ENOENT,
            RegionError::Overlaps(_) => EEXIST,
            RegionError::TableFull => ENOSPC,
            RegionError::Released => ESRCH,
            // The chunk states allocated by `register_locked` do not fit: a
            // driver bug, logged.
            RegionError::BadChunkStorage => {
                pr_warn!("warpq: a REGISTER's chunk states do not fit its region (driver bug)\n");
                EINVAL
            }
            RegionError::WrongLock
            | RegionError::InvalidState
            | RegionError::ZeroLength
            | RegionError::Overflow
            | RegionError::InvalidAccess => EINVAL,
        }
    }
}

impl From<RebuildError> for Error {
    /// The context was released: `ESRCH`; anything else (collisions past
    /// the retries, a queue that did not drain) may pass: `EAGAIN`.
    fn from(e: RebuildError) -> Self {
        match e {
            RebuildError::Released => ESRCH,
            RebuildError::WrongLock | RebuildError::RetriesExhausted { .. } | RebuildError::Busy => EAGAIN,
        }
    }
}

/// A negative errno from GUP or `hmm_range_fault()`.
pub(crate) struct FaultErrno(pub(crate) c_long);

impl From<FaultErrno> for PinError {
    fn from(FaultErrno(err): FaultErrno) -> Self {
        let is = |e: u32| err == -(e as c_long);
        if is(bindings::EBUSY) {
            PinError::Collision
        } else if [bindings::EINTR, bindings::ERESTARTSYS].into_iter().any(is) {
            // A signal (a fatal one, for GUP): not short of memory; retried
            // as a collision, and a dying task soon exhausts the retries, so
            // its fault or ioctl returns.
            PinError::Collision
        } else if [bindings::ENOMEM, bindings::EAGAIN].into_iter().any(is) {
            PinError::Transient
        } else {
            PinError::Gone
        }
    }
}
