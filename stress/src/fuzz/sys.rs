//! The fuzzer's view of the raw layer (`crate::raw`): errnos as `i32` (the
//! model compares them with lists), structures copied byte-wise into
//! scratch memory, and the ring header of any mapping of a queue (the
//! fuzzer maps one queue several times with different protections, so it
//! reaches the header through raw addresses).

use warpq::sys::*;

use super::{Res, NONE};
use crate::raw::{self, Errno, Map, RawRing};

/// The calling thread's errno.
pub fn errno() -> i32 {
    Errno::last().0
}

/// An errno's name (`EINVAL`), or `errno N`.
pub fn ename(e: i32) -> String {
    Errno(e).name()
}

/// ioctl argument structures: `repr(C)`, integers only, no padding.
///
/// # Safety
///
/// Implementors must have no padding and accept every bit pattern.
pub unsafe trait Plain: Copy + Default {}
// SAFETY: `repr(C)` structures of integers without padding (`warpq::sys`,
// generated from the C header).
unsafe impl Plain for warpq_info {}
// SAFETY: as above.
unsafe impl Plain for warpq_register {}
// SAFETY: as above.
unsafe impl Plain for warpq_unregister {}
// SAFETY: as above.
unsafe impl Plain for warpq_submit {}
// SAFETY: as above.
unsafe impl Plain for warpq_wait {}
// SAFETY: as above.
unsafe impl Plain for warpq_wake {}
// SAFETY: as above.
unsafe impl Plain for warpq_sqe {}
// SAFETY: `repr(C)`, a `Plain` structure followed by `u64`s: no padding.
unsafe impl Plain for InfoBuf {}
// SAFETY: as above.
unsafe impl Plain for StatsBuf {}

/// INFO's argument with room behind it: the kernel's structure may be
/// larger than this crate's (the size it writes back says).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct InfoBuf {
    /// The version this crate knows.
    pub i: warpq_info,
    /// Room for later versions.
    pub pad: [[u64; 32]; 2],
}

/// STATS's argument with room behind it (the ABI grows at the end; the
/// kernel's size, which it writes back, says how much it uses).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct StatsBuf {
    /// The version this crate knows (version 1 is its first `STATS_V1` bytes).
    pub s: warpq_stats,
    /// Room for later versions.
    pub pad: [[u64; 32]; 4],
}

// SAFETY: `repr(C)` integers and arrays of `u64` without padding.
unsafe impl Plain for warpq_stats {}

/// The bytes of a `Plain` value.
pub fn as_bytes<T: Plain>(v: &T) -> &[u8] {
    // SAFETY: `T: Plain` has no padding, so all its bytes are initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// A `Plain` value from the start of `b`.
pub fn from_bytes<T: Plain>(b: &[u8]) -> T {
    assert!(b.len() >= std::mem::size_of::<T>());
    let mut v = T::default();
    // SAFETY: `T: Plain` accepts any bytes; the source has enough of them.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), (&mut v as *mut T).cast::<u8>(), std::mem::size_of::<T>()) };
    v
}

/// ioctl with an argument that may be anything (bad on purpose); a
/// positive return value (never documented) comes back as `Err(-1000 - r)`.
pub fn sys_ioctl(fd: i32, cmd: libc::c_ulong, arg: u64) -> Result<(), i32> {
    match raw::ioctl(fd, cmd, arg) {
        Ok(0) => Ok(()),
        Ok(r) => Err(-1000 - r),
        Err(e) => Err(e.0),
    }
}

/// An anonymous mapping (`fixed`: exactly at `addr`), left mapped (the
/// fuzzer tracks it).
pub fn mmap_anon(addr: u64, len: usize, prot: i32, shared: bool, fixed: bool) -> Option<u64> {
    let mut flags = libc::MAP_ANONYMOUS | if shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE };
    if fixed {
        flags |= libc::MAP_FIXED;
    }
    if prot == NONE {
        flags |= libc::MAP_NORESERVE;
    }
    // SAFETY: an anonymous mapping; with MAP_FIXED only over address ranges
    // this program owns and no Rust reference points into.
    unsafe { raw::mmap_fixed(addr, len, prot, flags, -1, 0) }.ok().map(Map::leak)
}

/// A shared mapping of the device's ring over `addr` (in the fuzzer's
/// window), left mapped.
pub fn mmap_ring(addr: u64, prot: i32, fd: i32) -> Result<u64, i32> {
    // SAFETY: maps the device over a slot of the fuzzer's own reserved
    // window, which nothing in Rust refers to.
    let m = unsafe { raw::mmap_fixed(addr, WARPQ_RING_SIZE, prot, libc::MAP_SHARED | libc::MAP_FIXED, fd, 0) };
    m.map(Map::leak).map_err(|e| e.0)
}

/// An mmap of the device that must fail (undone if it does not).
pub fn mmap_refused(len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> Result<(), i32> {
    match raw::mmap(len, prot, flags, fd, off) {
        Ok(_unmapped_on_drop) => Ok(()),
        Err(e) => Err(e.0),
    }
}

/// Makes `[addr, addr + len)` an inaccessible reservation (a "tombstone").
pub fn reserve(addr: u64, len: usize) -> Res {
    match mmap_anon(addr, len, NONE, false, true) {
        Some(a) if a == addr => Ok(()),
        _ => Err(format!("reserving {addr:#x}+{len:#x}: {}", ename(errno()))),
    }
}

/// munmap of a range the fuzzer mapped and tracks.
pub fn sys_munmap(addr: u64, len: usize) -> Result<(), i32> {
    // SAFETY: only ranges this program mapped and tracks; no Rust reference
    // points into them.
    unsafe { raw::munmap(addr, len) }.map_err(|e| e.0)
}

/// mprotect of a range the fuzzer tracks (it reads and writes its pages
/// only as their tracked protection allows).
pub fn sys_mprotect(addr: u64, len: usize, prot: i32) -> Result<(), i32> {
    raw::mprotect(addr, len, prot).map_err(|e| e.0)
}

/// madvise of a range the fuzzer tracks.
pub fn sys_madvise(addr: u64, len: usize, advice: i32) -> Result<(), i32> {
    // SAFETY: only ranges this program mapped and tracks; the model of the
    // contents is updated by the caller.
    unsafe { raw::madvise(addr, len, advice) }.map_err(|e| e.0)
}

/// mremap of a mapping the fuzzer tracks (to a range it reserved).
pub fn sys_mremap(old: u64, old_len: usize, new_len: usize, flags: i32, new: u64) -> Result<u64, i32> {
    // SAFETY: moves or resizes our own mapping, onto our own reservation
    // when MREMAP_FIXED; no Rust reference points into either.
    unsafe { raw::mremap(old, old_len, new_len, flags, new) }.map_err(|e| e.0)
}

/// Copies `out.len()` bytes at user address `addr` out.
///
/// # Safety
///
/// `[addr, addr + out.len())` must be mapped readable.
pub unsafe fn read_mem(addr: u64, out: &mut [u8]) {
    // SAFETY: the caller guarantees the range is mapped readable.
    unsafe { std::ptr::copy_nonoverlapping(addr as usize as *const u8, out.as_mut_ptr(), out.len()) };
}

/// Copies `data` to user address `addr`.
///
/// # Safety
///
/// `[addr, addr + data.len())` must be mapped writable, and no Rust
/// reference may point into it.
pub unsafe fn write_mem(addr: u64, data: &[u8]) {
    // SAFETY: the caller guarantees the range is mapped writable and free
    // of references.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as usize as *mut u8, data.len()) };
}

/// The ring header of a queue mapping at `.0`, which must be mapped
/// readable for loads and writable for stores while the methods run (the
/// model tracks every ring mapping's protection: `RingMap::prot`).
#[derive(Clone, Copy)]
pub struct Hdr(pub u64);

impl Hdr {
    fn ring(self) -> RawRing {
        let map = Map::borrowed(self.0 as usize as *mut u8, WARPQ_RING_SIZE);
        // SAFETY: a whole ring mapping of the fuzzer's; it is only used
        // through a `Hdr` while mapped with the protection the call needs
        // (see the type); the descriptor is not used.
        unsafe { RawRing::from_map(map, -1) }
    }
    /// Loads a 32-bit header field (acquire).
    pub fn load(self, off: usize) -> u32 {
        self.ring().get(off)
    }
    /// Stores a 32-bit header field (release).
    pub fn store(self, off: usize, v: u32) {
        self.ring().set(off, v);
    }
    /// `owner_id`.
    pub fn owner(self) -> u64 {
        self.ring().owner_id()
    }
    /// `sq_invalid`.
    pub fn sq_invalid(self) -> u64 {
        self.ring().sq_invalid()
    }
    /// Writes submission slot `index` (masked).
    pub fn write_sqe(self, index: u32, s: &warpq_sqe) {
        self.ring().write_sqe(index, s);
    }
    /// Reads completion slot `index` (masked).
    pub fn read_cqe(self, index: u32) -> warpq_cqe {
        self.ring().read_cqe(index)
    }
}
