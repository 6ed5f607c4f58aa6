//! Mappings with any arguments, the errno when the kernel refuses.

use super::{check, Errno};

/// A mapping, unmapped on drop unless it was borrowed or leaked.
#[derive(Debug)]
pub struct Map {
    ptr: *mut u8,
    len: usize,
    owned: bool,
}

// SAFETY: a `Map` is an address range; moving or sharing the value between
// threads moves no memory, and what is done with the bytes is up to the
// code that reads or writes them (atomically, for a shared ring).
unsafe impl Send for Map {}
// SAFETY: as for `Send`: `&Map` only hands out the address.
unsafe impl Sync for Map {}

impl Map {
    /// A view of `len` bytes at `ptr` mapped elsewhere: never unmapped by
    /// this value.
    pub fn borrowed(ptr: *mut u8, len: usize) -> Map {
        Map { ptr, len, owned: false }
    }

    /// The first byte.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The length given when it was made.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the length is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The user address of byte `off`.
    pub fn addr(&self, off: usize) -> u64 {
        self.ptr as u64 + off as u64
    }

    /// Gives up ownership: the mapping stays (for one moved or unmapped by
    /// other means); returns its address.
    pub fn leak(mut self) -> u64 {
        self.owned = false;
        self.addr(0)
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: our mapping (or what is left of it: munmap of a range
            // with holes is fine); nothing borrows it past its owner.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// `mmap(NULL, len, prot, flags, fd, off)`: a new mapping where the kernel
/// chooses (`flags` must not hold `MAP_FIXED`; see [`mmap_fixed`]).
pub fn mmap(len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> Result<Map, Errno> {
    assert_eq!(flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE), 0, "mmap: use mmap_fixed");
    // SAFETY: a new mapping at an address the kernel picks replaces nothing.
    unsafe { mmap_fixed(0, len, prot, flags, fd, off) }
}

/// `mmap(at, len, prot, flags, fd, off)` with any flags (`MAP_FIXED` too).
///
/// # Safety
///
/// With `MAP_FIXED`, `[at, at + len)` must hold no memory that Rust code
/// still refers to (it is replaced).
pub unsafe fn mmap_fixed(at: u64, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> Result<Map, Errno> {
    // SAFETY: the caller vouches for the range under MAP_FIXED; otherwise
    // the kernel places a fresh mapping.
    let p = unsafe { libc::mmap(at as usize as *mut libc::c_void, len, prot, flags, fd, off) };
    if p == libc::MAP_FAILED {
        Err(Errno::last())
    } else {
        Ok(Map { ptr: p.cast(), len, owned: true })
    }
}

/// `mprotect(addr, len, prot)`. Taking rights away makes later accesses of
/// the range fault (SIGSEGV/SIGBUS): a crash, not a memory error.
pub fn mprotect(addr: u64, len: usize, prot: i32) -> Result<(), Errno> {
    // SAFETY: changing protections does not change contents or addresses.
    check(unsafe { libc::mprotect(addr as usize as *mut libc::c_void, len, prot) }.into()).map(drop)
}

/// `munmap(addr, len)`.
///
/// # Safety
///
/// No memory in the range may still be referred to by Rust code (an
/// owning [`Map`] of it must be leaked or dropped without touching it).
pub unsafe fn munmap(addr: u64, len: usize) -> Result<(), Errno> {
    // SAFETY: the caller vouches for the range.
    check(unsafe { libc::munmap(addr as usize as *mut libc::c_void, len) }.into()).map(drop)
}

/// `madvise(addr, len, advice)`.
///
/// # Safety
///
/// Advice that drops contents (`MADV_DONTNEED`, `MADV_FREE`...) must only
/// hit memory whose contents Rust code does not rely on.
pub unsafe fn madvise(addr: u64, len: usize, advice: i32) -> Result<(), Errno> {
    // SAFETY: the caller vouches for the range and the advice.
    check(unsafe { libc::madvise(addr as usize as *mut libc::c_void, len, advice) }.into()).map(drop)
}

/// `mremap(old, old_len, new_len, flags, new)`; the new address.
///
/// # Safety
///
/// A move leaves nothing at `old`: no Rust code may refer to it after; with
/// `MREMAP_FIXED`, as [`mmap_fixed`] for `[new, new + new_len)`.
pub unsafe fn mremap(old: u64, old_len: usize, new_len: usize, flags: i32, new: u64) -> Result<u64, Errno> {
    // SAFETY: the caller vouches for both ranges.
    let p = unsafe {
        libc::mremap(old as usize as *mut libc::c_void, old_len, new_len, flags, new as usize as *mut libc::c_void)
    };
    if p == libc::MAP_FAILED {
        Err(Errno::last())
    } else {
        Ok(p as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_errnos() {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        assert_eq!(mmap(0, prot, anon, -1, 0).map(drop), Err(Errno(libc::EINVAL)));
        let m = mmap(8192, prot, anon, -1, 0).unwrap();
        assert_eq!(mprotect(m.addr(1), 4096, prot), Err(Errno(libc::EINVAL)));
        assert_eq!(mprotect(m.addr(0), 4096, libc::PROT_READ), Ok(()));
    }
}
