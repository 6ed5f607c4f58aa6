//! Memory for the device: owned page-aligned buffers ([`Buffer`]), and their
//! registered form ([`RegisteredBuffer`]).
//!
//! What the device may touch is what is registered with the queue: the
//! driver pins those pages and maps them for the device, and the device may
//! read (and, with write access, write) them at any moment until they are
//! unregistered. The types here make that safe:
//!
//! - a [`RegisteredBuffer`] owns its memory, so nothing else can free it or
//!   hold references into it; its contents are reached by copies
//!   ([`RegisteredBuffer::read_at`], [`RegisteredBuffer::write_at`]) that
//!   tolerate the device writing concurrently, or by `unsafe` slices whose
//!   contract is that no command touching them is in flight;
//! - dropping it unregisters (`WARPQ_IOC_UNREGISTER` returns only when the
//!   device no longer touches the memory) and then unmaps; if unregistering
//!   fails the memory is leaked, never unmapped, so the device can never
//!   write memory that was handed back;
//! - [`RegisteredBuffer::unregister`] gives the plain [`Buffer`] back.
//!
//! Caller memory (a slice) is registered in a [`Scope`](crate::Scope).

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::error::{Error, ErrorKind, Op, Result};
use crate::{sys, Device};

/// The size of a page: registered memory starts and ends on one.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// What the device may do with a registered buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read only (sources of COPY and CRC32C).
    Read,
    /// Write only (destinations of COPY and FILL).
    Write,
    /// Both.
    ReadWrite,
}

impl Access {
    /// The `sys::WARPQ_ACCESS_*` bits.
    pub fn bits(self) -> u32 {
        match self {
            Access::Read => sys::WARPQ_ACCESS_READ,
            Access::Write => sys::WARPQ_ACCESS_WRITE,
            Access::ReadWrite => sys::WARPQ_ACCESS_READ | sys::WARPQ_ACCESS_WRITE,
        }
    }

    /// Whether the device may write.
    pub fn writes(self) -> bool {
        self != Access::Read
    }
}

impl From<Access> for u32 {
    fn from(a: Access) -> u32 {
        a.bits()
    }
}

/// Page-aligned, zero-filled memory of its own (an anonymous private
/// mapping), unmapped on drop: what [`Device::register_buffer`] takes.
///
/// It is a plain `[u8]` while not registered.
///
/// ```
/// let mut b = warpq::Buffer::new(10_000).unwrap();
/// assert_eq!(b.len(), 10_000);
/// assert_eq!(b.as_ptr() as usize % warpq::page_size(), 0);
/// b[..5].copy_from_slice(b"hello");
/// ```
pub struct Buffer {
    ptr: NonNull<u8>,
    /// What the user asked for.
    len: usize,
    /// The mapping: `len` rounded up to whole pages.
    map_len: usize,
}

// SAFETY: owned memory, like a Box<[u8]>.
unsafe impl Send for Buffer {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// `len` zeroed bytes, page aligned; the mapping is rounded up to whole
    /// pages (registration covers the whole mapping).
    pub fn new(len: usize) -> Result<Self> {
        if len == 0 {
            return Err(Error::new(Op::Alloc, ErrorKind::Empty, None, "a buffer must not be empty"));
        }
        let page = page_size();
        let map_len = len
            .checked_next_multiple_of(page)
            .ok_or_else(|| Error::new(Op::Alloc, ErrorKind::TooLarge, None, format!("{len} bytes cannot be mapped")))?;
        // SAFETY: a fresh private anonymous mapping at an address the
        // kernel picks; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::last_os(Op::Alloc));
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| Error::new(Op::Alloc, ErrorKind::Other, None, "mmap gave null"))?;
        Ok(Self { ptr, len, map_len })
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> Result<Self> {
        let mut b = Self::new(data.len())?;
        b.copy_from_slice(data);
        Ok(b)
    }

    /// The user address of the first byte (what commands name).
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Bytes mapped: the length rounded up to whole pages.
    pub fn mapped_len(&self) -> usize {
        self.map_len
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` initialised (zero-filled) bytes, owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer").field("addr", &format_args!("{:#x}", self.addr())).field("len", &self.len).finish()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: our mapping of `map_len` bytes; no reference into it
        // outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
    }
}

/// A [`Buffer`] registered with a device: the device may access it (as
/// [`Access`] says) until this is dropped or [`unregistered`](Self::unregister).
///
/// Commands name its bytes by [`addr_at`](Self::addr_at). Its contents are
/// reached by copies, which are well defined even while a command writes
/// the buffer (you then get some mix of old and new bytes): read after the
/// command's completion for a stable view — the completion is published
/// with release ordering after the device's writes, and reaping it is an
/// acquire, so a read after it sees them.
///
/// After `fork` the child's copy is not registered with anything (the
/// child's queue starts empty); dropping it in the child only unmaps the
/// child's copy.
pub struct RegisteredBuffer<'d> {
    /// `None` once handed back by `unregister`.
    buf: Option<Buffer>,
    dev: &'d Device,
    handle: u64,
    access: Access,
    pid: u32,
}

impl<'d> RegisteredBuffer<'d> {
    pub(crate) fn new(dev: &'d Device, buf: Buffer, access: Access) -> Result<Self> {
        // `buf` is owned by the value returned (or dropped after a failed
        // registration) and leaked if UNREGISTER fails in Drop.
        // SAFETY: nothing else refers to the memory, and it stays mapped
        // until after UNREGISTER.
        let handle = unsafe { dev.register_raw(buf.ptr.as_ptr(), buf.map_len, access.bits()) }?;
        Ok(Self { buf: Some(buf), dev, handle, access, pid: std::process::id() })
    }

    fn buf(&self) -> &Buffer {
        self.buf.as_ref().expect("present until unregister")
    }

    /// The driver's handle of this registration.
    pub fn handle(&self) -> u64 {
        self.handle
    }

    /// What the device may do with it.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The address of the first byte.
    pub fn addr(&self) -> u64 {
        self.buf().addr()
    }

    /// The address of byte `offset` (for commands). Panics past the end.
    pub fn addr_at(&self, offset: usize) -> u64 {
        assert!(offset <= self.len(), "offset {offset} past the end ({})", self.len());
        self.addr() + offset as u64
    }

    /// Its length in bytes (as allocated; the registration covers whole pages).
    pub fn len(&self) -> usize {
        self.buf().len
    }

    /// Never true (buffers are not empty); for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `out.len()` bytes starting at `offset` out of the buffer.
    /// Panics if the range is out of bounds.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) {
        check_range(offset, out.len(), self.len());
        // SAFETY: in bounds of our live mapping; volatile copy (the device
        // may be writing).
        unsafe { volatile_copy_from(self.buf().ptr.as_ptr().add(offset), out) };
    }

    /// Copies `data` into the buffer at `offset`. Panics if out of bounds.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) {
        check_range(offset, data.len(), self.len());
        // SAFETY: in bounds of our live mapping; volatile copy (the device
        // may be reading or writing).
        unsafe { volatile_copy_to(self.buf().ptr.as_ptr().add(offset), data) };
    }

    /// A copy of the whole buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len()];
        self.read_at(0, &mut v);
        v
    }

    /// The contents as a slice, without copying.
    ///
    /// # Safety
    ///
    /// While the slice lives, no command that writes this buffer may be in
    /// flight (pushed and not yet completed), and none may be pushed.
    pub unsafe fn as_slice(&self) -> &[u8] {
        self.buf()
    }

    /// The contents as a mutable slice, without copying.
    ///
    /// # Safety
    ///
    /// While the slice lives, no command that reads or writes this buffer
    /// may be in flight, and none may be pushed.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        self.buf.as_mut().expect("present until unregister")
    }

    /// Unregisters (the device no longer touches the memory when this
    /// returns) and gives the plain buffer back. If unregistering fails the
    /// memory stays registered and is leaked, never freed.
    pub fn unregister(mut self) -> Result<Buffer> {
        self.release()?;
        Ok(self.buf.take().expect("present until unregister"))
    }

    /// UNREGISTER, unless we are a forked child (which has no registration).
    fn release(&mut self) -> Result<()> {
        if std::process::id() != self.pid {
            return Ok(());
        }
        unregister_settled(self.dev, self.handle)
    }
}

impl Drop for RegisteredBuffer<'_> {
    fn drop(&mut self) {
        if self.buf.is_none() {
            return;
        }
        if self.release().is_err() {
            // The device may still touch the pages: never unmap them.
            std::mem::forget(self.buf.take());
        }
    }
}

impl std::fmt::Debug for RegisteredBuffer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredBuffer")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len())
            .field("access", &self.access)
            .field("handle", &self.handle)
            .finish()
    }
}

/// UNREGISTER until it is settled: `Ok` when the device no longer touches
/// the memory (unregistered now, or already gone: `ENOENT`, or the queue
/// released: `ESRCH`). Retries what the driver calls transient (`EBUSY`:
/// the engine did not drain in time; `EINTR`; `EAGAIN`) for a while.
pub(crate) fn unregister_settled(dev: &Device, handle: u64) -> Result<()> {
    let mut tries = 0;
    loop {
        match dev.unregister(handle) {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::ESRCH)) => return Ok(()),
            Err(e) if matches!(e.errno(), Some(libc::EBUSY | libc::EINTR | libc::EAGAIN)) && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

fn check_range(offset: usize, len: usize, total: usize) {
    assert!(
        offset.checked_add(len).is_some_and(|end| end <= total),
        "range {offset}..{offset}+{len} out of bounds of a {total}-byte buffer"
    );
}

/// Copies from memory the device may be writing: volatile, word by word.
///
/// # Safety
///
/// `src..src + out.len()` is readable.
pub(crate) unsafe fn volatile_copy_from(src: *const u8, out: &mut [u8]) {
    let mut i = 0;
    while i < out.len() && !(src as usize + i).is_multiple_of(8) {
        // SAFETY: in bounds (caller).
        out[i] = unsafe { std::ptr::read_volatile(src.add(i)) };
        i += 1;
    }
    while i + 8 <= out.len() {
        // SAFETY: in bounds (caller), 8-aligned.
        let w = unsafe { std::ptr::read_volatile(src.add(i).cast::<u64>()) };
        out[i..i + 8].copy_from_slice(&w.to_ne_bytes());
        i += 8;
    }
    while i < out.len() {
        // SAFETY: in bounds (caller).
        out[i] = unsafe { std::ptr::read_volatile(src.add(i)) };
        i += 1;
    }
}

/// Copies into memory the device may be reading or writing: volatile.
///
/// # Safety
///
/// `dst..dst + data.len()` is writable and no Rust reference covers it.
pub(crate) unsafe fn volatile_copy_to(dst: *mut u8, data: &[u8]) {
    let mut i = 0;
    while i < data.len() && !(dst as usize + i).is_multiple_of(8) {
        // SAFETY: in bounds (caller).
        unsafe { std::ptr::write_volatile(dst.add(i), data[i]) };
        i += 1;
    }
    while i + 8 <= data.len() {
        let w = u64::from_ne_bytes(data[i..i + 8].try_into().expect("8 bytes"));
        // SAFETY: in bounds (caller), 8-aligned.
        unsafe { std::ptr::write_volatile(dst.add(i).cast::<u64>(), w) };
        i += 8;
    }
    while i < data.len() {
        // SAFETY: in bounds (caller).
        unsafe { std::ptr::write_volatile(dst.add(i), data[i]) };
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned_zeroed_and_rounded_up() {
        let page = page_size();
        let b = Buffer::new(page + 1).unwrap();
        assert_eq!(b.addr() as usize % page, 0);
        assert_eq!(b.len(), page + 1);
        assert_eq!(b.mapped_len(), 2 * page);
        assert!(b.iter().all(|&x| x == 0));
        let c = Buffer::from_slice(b"abc").unwrap();
        assert_eq!(&c[..], b"abc");
    }

    #[test]
    fn an_empty_buffer_is_refused_with_a_reason() {
        let e = Buffer::new(0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Empty);
        assert_eq!(e.op(), Op::Alloc);
    }

    #[test]
    fn volatile_copies_match_plain_ones_at_every_alignment() {
        let src: Vec<u8> = (0..100u8).collect();
        for off in 0..9 {
            for len in [0, 1, 7, 8, 9, 17, 64, 90] {
                if off + len > src.len() {
                    continue;
                }
                let mut out = vec![0u8; len];
                // SAFETY: in bounds of `src`.
                unsafe { volatile_copy_from(src.as_ptr().add(off), &mut out) };
                assert_eq!(out, src[off..off + len]);
                let mut dst = vec![0xffu8; 100];
                // SAFETY: in bounds of `dst`, no reference held across.
                unsafe { volatile_copy_to(dst.as_mut_ptr().add(off), &src[..len]) };
                assert_eq!(dst[off..off + len], src[..len]);
                assert!(dst[..off].iter().chain(&dst[off + len..]).all(|&x| x == 0xff));
            }
        }
    }

    #[test]
    fn access_bits() {
        assert_eq!(Access::Read.bits(), sys::WARPQ_ACCESS_READ);
        assert_eq!(u32::from(Access::ReadWrite), 3);
        assert!(Access::Write.writes() && !Access::Read.writes());
    }
}
