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

/// How a [`Buffer`]'s memory is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backing {
    /// Anonymous private memory in base pages.
    Anonymous,
    /// Anonymous private memory, 2 MiB aligned, advised `MADV_HUGEPAGE` so
    /// that the kernel backs it with transparent huge pages where it can.
    TransparentHuge,
    /// `MAP_HUGETLB` 2 MiB pages from the hugetlbfs pool
    /// (`/proc/sys/vm/nr_hugepages` must hold enough free pages).
    Hugetlb,
    /// A mapping the caller made ([`Buffer::from_mmap`]): anonymous, a file
    /// (`MAP_SHARED` or private), a memfd.
    Mapped,
}

/// The huge page size used by [`Backing::TransparentHuge`] and
/// [`Backing::Hugetlb`] buffers (x86-64's PMD size).
pub const HUGE_PAGE_SIZE: usize = 2 << 20;

/// Page-aligned memory of its own, unmapped on drop: what
/// [`Device::register_buffer`] takes. A [`memmap2::MmapMut`]: a fresh
/// zero-filled anonymous mapping ([`Buffer::new`], [`Buffer::huge`]), or one
/// the caller already has ([`Buffer::from_mmap`], [`Device::register_mmap`]),
/// given back by [`Buffer::into_mmap`].
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
    map: memmap2::MmapMut,
    /// What the user asked for (at most `map.len()`).
    len: usize,
    backing: Backing,
}

impl Buffer {
    /// `len` zeroed bytes, page aligned; the mapping is rounded up to whole
    /// pages (registration covers the whole mapping).
    pub fn new(len: usize) -> Result<Self> {
        Self::anonymous(len, Backing::Anonymous)
    }

    /// `len` zeroed bytes on huge pages: `backing` is
    /// [`Backing::TransparentHuge`] or [`Backing::Hugetlb`]. The mapping is
    /// rounded up to whole 2 MiB pages; a hugetlb mapping starts on one, and
    /// so does a THP one on Linux 6.7 and later (which aligns anonymous
    /// mappings of a 2 MiB multiple). Hugetlb fails with
    /// [`ErrorKind::OutOfMemory`] when the pool has too few free pages.
    pub fn huge(len: usize, backing: Backing) -> Result<Self> {
        match backing {
            Backing::TransparentHuge | Backing::Hugetlb => Self::anonymous(len, backing),
            other => Err(Error::new(
                Op::Alloc,
                ErrorKind::InvalidArgument,
                None,
                format!("Buffer::huge takes TransparentHuge or Hugetlb, not {other:?}"),
            )),
        }
    }

    fn anonymous(len: usize, backing: Backing) -> Result<Self> {
        if len == 0 {
            return Err(Error::new(Op::Alloc, ErrorKind::Empty, None, "a buffer must not be empty"));
        }
        let unit = if backing == Backing::Anonymous { page_size() } else { HUGE_PAGE_SIZE };
        let map_len = len
            .checked_next_multiple_of(unit)
            .ok_or_else(|| Error::new(Op::Alloc, ErrorKind::TooLarge, None, format!("{len} bytes cannot be mapped")))?;
        let mut options = memmap2::MmapOptions::new();
        options.len(map_len);
        if backing == Backing::Hugetlb {
            // log2 of the page size: MAP_HUGE_2MB.
            options.huge(Some(HUGE_PAGE_SIZE.trailing_zeros() as u8));
        }
        // A private anonymous mapping at an address the kernel picks. (An
        // anonymous mapping whose length is a multiple of 2 MiB starts on a
        // 2 MiB boundary: the kernel aligns it for THP since 6.7.)
        let map = options.map_anon().map_err(|e| {
            let why = if backing == Backing::Hugetlb {
                format!("MAP_HUGETLB of {map_len} bytes (are there enough free pages in /proc/sys/vm/nr_hugepages?)")
            } else {
                format!("an anonymous mapping of {map_len} bytes")
            };
            Error::from_io(Op::Alloc, &e).with_hint(format!("{why} failed: {e}"))
        })?;
        if backing == Backing::TransparentHuge {
            // Advice, not a promise: the kernel may still use base pages.
            map.advise(memmap2::Advice::HugePage)
                .map_err(|e| Error::from_io(Op::Alloc, &e).with_hint(format!("madvise(MADV_HUGEPAGE) failed: {e}")))?;
        }
        Ok(Self { map, len, backing })
    }

    /// A buffer over a mapping the caller already has: anonymous, a
    /// `MAP_SHARED` file or memfd mapping (`MmapOptions::map_mut`), or a
    /// private copy-on-write one (`map_copy`). The buffer owns it from now
    /// on, so nothing else can unmap it or hold references into it while it
    /// is registered; [`Buffer::into_mmap`] gives it back.
    ///
    /// What the driver can register depends on its backing: under `pin`,
    /// the kernel refuses writable long-term pins of files on file systems
    /// that write back (ext4, xfs...: since 6.5), so such a registration
    /// with write access fails with [`ErrorKind::BadMemory`] and says so; shmem (tmpfs,
    /// memfd) and hugetlbfs files work. Under `mirror` nothing is pinned.
    pub fn from_mmap(map: memmap2::MmapMut) -> Result<Self> {
        if map.is_empty() {
            return Err(Error::new(Op::Alloc, ErrorKind::Empty, None, "an empty mapping cannot be registered"));
        }
        let len = map.len();
        Ok(Self { map, len, backing: Backing::Mapped })
    }

    /// The mapping back, for a buffer made by [`Buffer::from_mmap`] (or any
    /// other: a fresh one is an anonymous mapping of
    /// [`mapped_len`](Self::mapped_len) bytes).
    pub fn into_mmap(self) -> memmap2::MmapMut {
        self.map
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> Result<Self> {
        let mut b = Self::new(data.len())?;
        b.copy_from_slice(data);
        Ok(b)
    }

    /// The user address of the first byte (what commands name).
    pub fn addr(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    /// Bytes registered: the mapping's length rounded up to whole pages.
    pub fn mapped_len(&self) -> usize {
        self.map.len().next_multiple_of(page_size())
    }

    /// How the memory is backed.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    fn raw(&self) -> *const u8 {
        self.map.as_ptr()
    }

    fn raw_mut(&mut self) -> *mut u8 {
        self.map.as_mut_ptr()
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.map[..self.len]
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len)
            .field("backing", &self.backing)
            .finish()
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
    pub(crate) fn new(dev: &'d Device, mut buf: Buffer, access: Access) -> Result<Self> {
        // `buf` is owned by the value returned (or dropped after a failed
        // registration) and leaked if UNREGISTER fails in Drop.
        // SAFETY: nothing else refers to the memory, and it stays mapped
        // until after UNREGISTER.
        let handle = unsafe { dev.register_raw(buf.map.as_mut_ptr(), buf.mapped_len(), access.bits()) }
            .map_err(|e| explain_refusal(e, &buf, access))?;
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
        unsafe { volatile_copy_from(self.buf().raw().add(offset), out) };
    }

    /// Copies `data` into the buffer at `offset`. Panics if out of bounds.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) {
        check_range(offset, data.len(), self.len());
        // SAFETY: in bounds of our live mapping; volatile copy (the device
        // may be reading or writing).
        unsafe { volatile_copy_to(self.buf.as_mut().expect("present until unregister").raw_mut().add(offset), data) };
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

/// A REGISTER refused for a caller's mapping: say what the kernel's rules
/// for long-term pins of file pages are, the likeliest reason.
fn explain_refusal(e: Error, buf: &Buffer, access: Access) -> Error {
    if e.kind() == ErrorKind::BadMemory
        && e.errno() == Some(libc::EFAULT)
        && buf.backing == Backing::Mapped
        && access.writes()
    {
        e.with_hint(
            "the pages could not be pinned for the device to write: the kernel refuses writable long-term pins of \
             files on file systems that write back (ext4, xfs, ...; since 6.5), so map a shmem file (tmpfs, memfd) \
             or hugetlbfs, register with Access::Read, or load warpq with backing=mirror; or the mapping is \
             read-only or not mapped any more",
        )
    } else {
        e
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
    fn a_callers_mapping_is_owned_and_given_back() {
        let mut map = memmap2::MmapOptions::new().len(3 * page_size()).map_anon().unwrap();
        map[..3].copy_from_slice(b"xyz");
        let addr = map.as_ptr() as u64;
        let b = Buffer::from_mmap(map).unwrap();
        assert_eq!(
            (b.addr(), b.len(), b.mapped_len(), b.backing()),
            (addr, 3 * page_size(), 3 * page_size(), Backing::Mapped)
        );
        assert_eq!(&b[..3], b"xyz");
        let map = b.into_mmap();
        assert_eq!((map.as_ptr() as u64, &map[..3]), (addr, &b"xyz"[..]));
        let empty = memmap2::MmapOptions::new().len(0).map_anon().unwrap();
        assert_eq!(Buffer::from_mmap(empty).unwrap_err().kind(), ErrorKind::Empty);
    }

    #[test]
    fn huge_buffers_round_up_to_huge_pages() {
        let b = Buffer::huge(HUGE_PAGE_SIZE + 1, Backing::TransparentHuge).unwrap();
        assert_eq!(
            (b.len(), b.mapped_len(), b.backing()),
            (HUGE_PAGE_SIZE + 1, 2 * HUGE_PAGE_SIZE, Backing::TransparentHuge)
        );
        assert!(b.iter().all(|&x| x == 0));
        // No hugetlb pool on a build machine, most likely: either way a
        // clear answer.
        match Buffer::huge(HUGE_PAGE_SIZE, Backing::Hugetlb) {
            Ok(h) => assert_eq!(h.addr() as usize % HUGE_PAGE_SIZE, 0),
            Err(e) => assert!(e.hint().contains("nr_hugepages"), "{e}"),
        }
        let e = Buffer::huge(4096, Backing::Anonymous).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
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
