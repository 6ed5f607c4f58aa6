// SPDX-License-Identifier: GPL-2.0

//! `/dev/warpqN`: a misc character device whose file operations (in the C
//! shim, for `.owner = THIS_MODULE`) call back into `warpq_rs_open` & co.

use core::ffi::c_void;

use kernel::error::Error;
use kernel::prelude::*;
use kernel::sync::Arc;

use crate::device::DeviceCore;
use crate::shim;

/// The character device is registered while this value lives.
///
/// # Invariants
///
/// `handle` is the shim's registration; its owner pointer is the
/// `DeviceCore` of an `Arc` that the caller keeps alive longer than this
/// value (the PCI driver data holds both, this one dropped first).
pub(crate) struct MiscRegistration {
    handle: *mut c_void,
}

// SAFETY: the handle is only used to deregister, which may happen on any thread.
unsafe impl Send for MiscRegistration {}
// SAFETY: no method takes `&self`.
unsafe impl Sync for MiscRegistration {}

impl MiscRegistration {
    /// Registers `/dev/warpq{index}` for `core`. `core` must outlive the
    /// returned value.
    pub(crate) fn register(index: u32, core: &Arc<DeviceCore>) -> Result<Self> {
        let owner: *const DeviceCore = &**core;
        let mut err = 0;
        // SAFETY: `as_dev` is the device's valid `struct device`; `owner`
        // stays valid while registered (the caller keeps `core` alive longer).
        let handle = unsafe { shim::warpq_misc_register(index, core.pdev.as_dev(), owner as *mut c_void, &mut err) };
        if handle.is_null() {
            return Err(Error::from_errno(err));
        }
        Ok(Self { handle })
    }
}

impl Drop for MiscRegistration {
    fn drop(&mut self) {
        // SAFETY: registered in `register` (type invariant). misc_deregister()
        // serialises with misc_open(), so no open starts after this returns.
        unsafe { shim::warpq_misc_deregister(self.handle) };
    }
}
