//! Registering caller memory for the device, safely: [`Device::scope`].
//!
//! A registration of borrowed memory must end before the borrow does, or the
//! device could write memory that safe code has freed and reused. A value
//! that unregisters in `Drop` cannot promise that alone, because safe code
//! may `mem::forget` it. So, like [`std::thread::scope`], registrations of
//! borrowed memory live in a scope: [`Registration`] unregisters when
//! dropped, and whatever is still registered when the scope's closure
//! returns (forgotten, leaked in an `Rc` cycle, or the closure panicked) is
//! unregistered by the scope before it returns — before the borrows end.
//!
//! ```no_run
//! use warpq::{opcode, Access, Device};
//! # fn main() -> warpq::Result<()> {
//! let dev = Device::open("/dev/warpq0")?;
//! let mut q = dev.queue()?;
//! let mut mem = warpq::Buffer::new(1 << 20)?; // page aligned
//! let dst: &mut [u8] = &mut mem;
//! let crc = dev.scope(|s| -> warpq::Result<u64> {
//!     let reg = s.register(&mut *dst, Access::ReadWrite)?;
//!     q.submission().push(&opcode::Fill::new(reg.addr(), 4096, 0xab).build().user_data(1)).unwrap();
//!     q.submission().push(&opcode::Crc32c::new(reg.addr(), 4096).build().user_data(2)).unwrap();
//!     q.submit_and_wait(2)?;
//!     let done: Vec<_> = q.completion().collect();
//!     Ok(done[1].result())
//! })?; // unregistered here at the latest
//! assert!(dst[..4096].iter().all(|&b| b == 0xab)); // usable again
//! assert_eq!(crc as u32, warpq::crc32c(0, &dst[..4096]));
//! # Ok(()) }
//! ```
//!
//! While registered, the memory is out of safe code's reach:
//!
//! ```compile_fail
//! # fn f(dev: &warpq::Device) {
//! let mut v = warpq::Buffer::new(4096).unwrap();
//! dev.scope(|s| {
//!     let reg = s.register(&mut v[..], warpq::Access::Write).unwrap();
//!     v[0] = 1; // error: `v` is borrowed by the registration's scope
//!     drop(reg);
//! });
//! # }
//! ```
//!
//! and memory that does not outlive the scope cannot be registered in it:
//!
//! ```compile_fail
//! # fn f(dev: &warpq::Device) {
//! dev.scope(|s| {
//!     let mut local = warpq::Buffer::new(4096).unwrap();
//!     let reg = s.register(&mut local[..], warpq::Access::Write).unwrap();
//!     std::mem::forget(reg);
//!     // error: `local` dropped here while still borrowed
//! });
//! # }
//! ```
//!
//! nor can a registration escape its scope:
//!
//! ```compile_fail
//! # fn f(dev: &warpq::Device) {
//! let mut v = warpq::Buffer::new(4096).unwrap();
//! let escaped = dev.scope(|s| s.register(&mut v[..], warpq::Access::Write).unwrap());
//! # }
//! ```

use std::marker::PhantomData;
use std::sync::Mutex;

use crate::buffer::{page_size, unregister_settled, volatile_copy_from, volatile_copy_to, Access};
use crate::error::{Error, ErrorKind, Op, Result};
use crate::Device;

/// A scope for registrations of borrowed memory; see [`Device::scope`].
///
/// `'scope` is the scope's own lifetime, `'env` that of what it borrows
/// (the device and the memory), as in [`std::thread::Scope`].
pub struct Scope<'scope, 'env: 'scope> {
    dev: &'env Device,
    /// Handles registered in this scope and not yet unregistered.
    live: Mutex<Vec<u64>>,
    pid: u32,
    /// Invariant in both lifetimes, like `std::thread::Scope`.
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Registers `mem` for the device with `access`; it stays borrowed (out
    /// of reach) until the [`Registration`] is dropped, and at the latest
    /// until the scope ends. `mem` must start and end on a page boundary
    /// (take it from a [`Buffer`](crate::Buffer)).
    pub fn register(&'scope self, mem: &'scope mut [u8], access: Access) -> Result<Registration<'scope>> {
        let (ptr, len) = (mem.as_mut_ptr(), mem.len());
        let handle = self.register_ptr(ptr, len, access)?;
        Ok(Registration { scope: self.token(), handle, ptr, len, access, _mem: PhantomData })
    }

    /// Registers `mem` for the device to read (sources of COPY and CRC32C).
    /// Shared borrows of `mem` stay usable meanwhile; it cannot be changed
    /// until the [`SharedRegistration`] is dropped or the scope ends.
    pub fn register_shared(&'scope self, mem: &'scope [u8]) -> Result<SharedRegistration<'scope>> {
        let (ptr, len) = (mem.as_ptr(), mem.len());
        // The device only reads (Access::Read), so the pointer's mutability
        // does not matter to the driver.
        let handle = self.register_ptr(ptr.cast_mut(), len, Access::Read)?;
        Ok(SharedRegistration { scope: self.token(), handle, ptr, len, _mem: PhantomData })
    }

    fn token(&'scope self) -> ScopeRef<'scope> {
        ScopeRef { dev: self.dev, live: &self.live, pid: self.pid }
    }

    fn register_ptr(&self, ptr: *mut u8, len: usize, access: Access) -> Result<u64> {
        let page = page_size();
        let addr = ptr as usize;
        // Say precisely what is wrong with the memory before asking the
        // kernel (which would refuse with a bare EINVAL).
        if len == 0 {
            return Err(Error::new(Op::Register, ErrorKind::Empty, Some(libc::EINVAL), "cannot register zero bytes"));
        }
        if !addr.is_multiple_of(page) || !len.is_multiple_of(page) {
            return Err(Error::new(
                Op::Register,
                ErrorKind::Unaligned,
                Some(libc::EINVAL),
                format!(
                    "{len} bytes at {addr:#x} are not whole pages: registered memory must start and end on a \
                     {page}-byte page boundary (allocate it with warpq::Buffer)"
                ),
            ));
        }
        // Record the handle before anyone can forget the registration.
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: `ptr..ptr+len` is borrowed for 'scope by the caller (mutably
        // if the device may write); it is unregistered before the borrow
        // ends: by the Registration's Drop, or by the scope's end (`live`).
        let handle = unsafe { self.dev.register_raw(ptr, len, access.bits()) }?;
        live.push(handle);
        Ok(handle)
    }

    /// The device this scope registers with.
    pub fn device(&self) -> &'env Device {
        self.dev
    }

    /// Unregisters everything still live; aborts the process if that
    /// cannot be done, because the borrows are about to end.
    fn finish(&self) {
        if std::process::id() != self.pid {
            return; // a forked child: nothing is registered for it
        }
        let live = std::mem::take(&mut *self.live.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in live {
            if let Err(e) = unregister_settled(self.dev, handle) {
                eprintln!(
                    "warpq: cannot unregister borrowed memory (handle {handle:#x}) at the end of its scope: {e}; \
                     aborting rather than hand back memory the device may still access"
                );
                std::process::abort();
            }
        }
    }
}

/// What a registration needs of its scope.
#[derive(Clone, Copy)]
struct ScopeRef<'scope> {
    dev: &'scope Device,
    live: &'scope Mutex<Vec<u64>>,
    pid: u32,
}

impl ScopeRef<'_> {
    /// Unregisters `handle` now and forgets it. On failure it stays live:
    /// the scope's end tries again (and aborts if it must).
    fn release(&self, handle: u64) -> Result<()> {
        if std::process::id() != self.pid {
            return Ok(());
        }
        unregister_settled(self.dev, handle)?;
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|&h| h != handle);
        Ok(())
    }
}

/// Runs `f` with a [`Scope`]; see [`Device::scope`].
pub(crate) fn scope<'env, F, T>(dev: &'env Device, f: F) -> T
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
{
    struct Finish<'a, 'scope, 'env>(&'a Scope<'scope, 'env>);
    impl Drop for Finish<'_, '_, '_> {
        fn drop(&mut self) {
            // Also on unwinding: the borrows end when `scope` returns.
            self.0.finish();
        }
    }
    let s =
        Scope { dev, live: Mutex::new(Vec::new()), pid: std::process::id(), _scope: PhantomData, _env: PhantomData };
    let guard = Finish(&s);
    let out = f(&s);
    drop(guard);
    out
}

/// Borrowed memory registered for the device, exclusively borrowed until
/// this is dropped (which unregisters it) or its scope ends.
///
/// Its contents are reached by copies that tolerate the device writing
/// concurrently ([`read_at`](Self::read_at), [`write_at`](Self::write_at)),
/// or, after [`unregister`](Self::unregister), through the slice itself.
pub struct Registration<'scope> {
    scope: ScopeRef<'scope>,
    handle: u64,
    ptr: *mut u8,
    len: usize,
    access: Access,
    _mem: PhantomData<&'scope mut [u8]>,
}

// SAFETY: it stands for a `&mut [u8]` (Send + Sync) plus shared references
// to the device and the scope's mutex (both Sync).
unsafe impl Send for Registration<'_> {}
// SAFETY: as above; `&self` methods only copy out.
unsafe impl Sync for Registration<'_> {}

/// The methods [`Registration`] and [`SharedRegistration`] share, written
/// once so that the two kinds cannot drift apart. Both have `handle`, `ptr`
/// (`*mut u8` or `*const u8`) and `len` fields.
macro_rules! registration_accessors {
    () => {
        /// The driver's handle.
        pub fn handle(&self) -> u64 {
            self.handle
        }

        /// The address of the first byte (what commands name).
        pub fn addr(&self) -> u64 {
            self.ptr as u64
        }

        /// The address of byte `offset`. Panics past the end.
        pub fn addr_at(&self, offset: usize) -> u64 {
            assert!(offset <= self.len, "offset {offset} past the end ({})", self.len);
            self.addr() + offset as u64
        }

        /// Length in bytes.
        pub fn len(&self) -> usize {
            self.len
        }

        /// Never true (empty memory cannot be registered).
        pub fn is_empty(&self) -> bool {
            self.len == 0
        }
    };
}

impl<'scope> Registration<'scope> {
    registration_accessors!();

    /// What the device may do with it.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Copies bytes out, from `offset`. Panics if out of bounds.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) {
        assert!(offset.checked_add(out.len()).is_some_and(|e| e <= self.len), "out of bounds");
        // SAFETY: in bounds of the borrowed memory; volatile (the device
        // may be writing).
        unsafe { volatile_copy_from(self.ptr.add(offset), out) };
    }

    /// Copies bytes in, at `offset`. Panics if out of bounds.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) {
        assert!(offset.checked_add(data.len()).is_some_and(|e| e <= self.len), "out of bounds");
        // SAFETY: in bounds, exclusively borrowed by us; volatile.
        unsafe { volatile_copy_to(self.ptr.add(offset), data) };
    }

    /// A copy of the whole memory.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.read_at(0, &mut v);
        v
    }

    /// Unregisters now and gives the memory back for the rest of the scope.
    /// On failure the memory stays registered (and borrowed) and the
    /// scope's end tries again.
    pub fn unregister(self) -> Result<&'scope mut [u8]> {
        self.scope.release(self.handle)?;
        let (ptr, len) = (self.ptr, self.len);
        std::mem::forget(self);
        // SAFETY: the memory was borrowed mutably for 'scope by `register`;
        // the device no longer touches it.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        // On failure the handle stays in the scope's list: retried, or
        // abort, at the scope's end.
        let _ = self.scope.release(self.handle);
    }
}

impl std::fmt::Debug for Registration<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len)
            .field("access", &self.access)
            .field("handle", &self.handle)
            .finish()
    }
}

/// Borrowed memory registered for the device to read; shared borrows of it
/// stay usable, changes wait until this is dropped or its scope ends.
pub struct SharedRegistration<'scope> {
    scope: ScopeRef<'scope>,
    handle: u64,
    ptr: *const u8,
    len: usize,
    _mem: PhantomData<&'scope [u8]>,
}

// SAFETY: it stands for a `&[u8]` plus shared references to Sync values.
unsafe impl Send for SharedRegistration<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedRegistration<'_> {}

impl SharedRegistration<'_> {
    registration_accessors!();

    /// Unregisters now. On failure the scope's end tries again.
    pub fn unregister(self) -> Result<()> {
        self.scope.release(self.handle)?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for SharedRegistration<'_> {
    fn drop(&mut self) {
        let _ = self.scope.release(self.handle);
    }
}

impl std::fmt::Debug for SharedRegistration<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRegistration")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len)
            .field("handle", &self.handle)
            .finish()
    }
}
