//! The raw ABI of `driver/uapi/warpq.h` for programs that must send what
//! the safe `warpq` crate never would: any ioctl request with any argument
//! (null, kernel, unmapped pointers; short, long or garbage structures),
//! mappings with any flags, and a ring driven word by word ([`RawRing`]).
//!
//! Layouts and constants come from `warpq::sys`; nothing here restates them.
//! Errors are the bare [`Errno`] the kernel returned, so callers compare it
//! with what the ABI promises.

mod mmap;
mod ring;

use std::fmt;
use std::mem::{offset_of, size_of};

use warpq::sys::*;

pub use mmap::{madvise, mmap, mmap_fixed, mprotect, mremap, munmap, Map};
pub use ring::{cqe_from_words, header, sqe_words, RawRing};

/// An errno returned by a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's `errno` now.
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// Its symbolic name (`EINVAL`), or `errno N` for one the driver does
    /// not return.
    pub fn name(self) -> String {
        warpq::errno_name(self.0).map_or_else(|| format!("errno {}", self.0), str::to_string)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl From<Errno> for String {
    fn from(e: Errno) -> String {
        e.name()
    }
}

/// `success (value)` or the errno's name: for messages.
pub fn show<T: fmt::Debug>(r: &Result<T, Errno>) -> String {
    match r {
        Ok(v) => format!("success ({v:?})"),
        Err(e) => e.name(),
    }
}

/// The result of a system call that returns -1 and sets errno on failure.
fn check(r: i64) -> Result<i64, Errno> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

// ---- addresses the kernel must refuse ----------------------------------------

/// The start of the kernel's direct map on x86-64 (4-level paging).
pub const KERNEL_ADDR: u64 = 0xffff_8880_0000_0000;
/// Just above the 4-level user address space.
pub const ABOVE_USER: u64 = 0x0000_8000_0000_0000;
/// Not canonical under either paging mode.
pub const NONCANONICAL: u64 = 0x8000_0000_0000_0000;
/// The legacy vsyscall page (execute-only emulation: not readable).
pub const VSYSCALL: u64 = 0xffff_ffff_ff60_0000;
/// A user address the stress programs never map.
pub const UNMAPPED: u64 = 0x0000_1000_0000_0000;

// ---- ioctls ------------------------------------------------------------------

/// An ioctl request number: direction bits (`0` none, `1` write, `2`
/// read, `3` both), type byte, number and size, as `_IOC` builds them.
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: u32) -> libc::c_ulong {
    ((dir << 30) | (size << 16) | (ty << 8) | nr) as libc::c_ulong
}

/// The size of `struct warpq_info` in version 1 of the ABI.
pub const INFO_V1: usize = size_of::<warpq_info>();
/// The size of `struct warpq_stats` in version 1 of the ABI (the
/// histograms came later).
pub const STATS_V1: usize = offset_of!(warpq_stats, hist);

/// Every warpq ioctl: its name, request and the size of its version-1
/// structure.
pub const IOCTLS: [(&str, libc::c_ulong, usize); 7] = [
    ("INFO", WARPQ_IOC_INFO, INFO_V1),
    ("REGISTER", WARPQ_IOC_REGISTER, size_of::<warpq_register>()),
    ("UNREGISTER", WARPQ_IOC_UNREGISTER, size_of::<warpq_unregister>()),
    ("SUBMIT", WARPQ_IOC_SUBMIT, size_of::<warpq_submit>()),
    ("WAIT", WARPQ_IOC_WAIT, size_of::<warpq_wait>()),
    ("WAKE", WARPQ_IOC_WAKE, size_of::<warpq_wake>()),
    ("STATS", WARPQ_IOC_STATS, STATS_V1),
];

/// One ioctl with a raw argument (any request, any pointer or value);
/// the ioctl's return value, or the errno.
pub fn ioctl(fd: i32, req: libc::c_ulong, arg: u64) -> Result<i32, Errno> {
    // SAFETY: the argument is either memory of the caller's laid out as the
    // request expects, or a bad pointer (null, kernel, unmapped, protected)
    // that the kernel must refuse: the kernel checks every user pointer.
    let r = unsafe { libc::ioctl(fd, req, arg as usize as *mut libc::c_void) };
    check(r.into()).map(|r| r as i32)
}

/// [`ioctl`] with a pointer to `arg` (which the kernel may write).
pub fn ioctl_on<T>(fd: i32, req: libc::c_ulong, arg: &mut T) -> Result<i32, Errno> {
    ioctl(fd, req, arg as *mut T as u64)
}

/// `WARPQ_IOC_REGISTER`; the handle.
pub fn register(fd: i32, addr: u64, len: u64, access: u32) -> Result<u64, Errno> {
    let mut r = warpq_register { size: size_of::<warpq_register>() as u32, access, addr, len, handle: 0 };
    ioctl_on(fd, WARPQ_IOC_REGISTER, &mut r).map(|_| r.handle)
}

/// `WARPQ_IOC_UNREGISTER`.
pub fn unregister(fd: i32, handle: u64) -> Result<(), Errno> {
    let mut r = warpq_unregister { size: size_of::<warpq_unregister>() as u32, rsvd: 0, handle };
    ioctl_on(fd, WARPQ_IOC_UNREGISTER, &mut r).map(drop)
}

/// `WARPQ_IOC_SUBMIT` of `count` entries at user address `sqes`; how many
/// were queued.
pub fn submit(fd: i32, sqes: u64, count: u32) -> Result<u32, Errno> {
    let mut r = warpq_submit { size: size_of::<warpq_submit>() as u32, count, sqes, submitted: 0, rsvd: 0 };
    ioctl_on(fd, WARPQ_IOC_SUBMIT, &mut r).map(|_| r.submitted)
}

/// `WARPQ_IOC_WAIT`; the completions ready.
pub fn wait(fd: i32, min_ready: u32, timeout_ns: i64) -> Result<u32, Errno> {
    let mut r = warpq_wait { size: size_of::<warpq_wait>() as u32, rsvd: 0, min_ready, ready: 0, timeout_ns };
    ioctl_on(fd, WARPQ_IOC_WAIT, &mut r).map(|_| r.ready)
}

/// `WARPQ_IOC_WAKE`.
pub fn wake(fd: i32) -> Result<(), Errno> {
    let mut r = warpq_wake { size: size_of::<warpq_wake>() as u32, rsvd: 0 };
    ioctl_on(fd, WARPQ_IOC_WAKE, &mut r).map(drop)
}

/// `WARPQ_IOC_INFO`.
pub fn info(fd: i32) -> Result<warpq_info, Errno> {
    let mut i = warpq_info { size: INFO_V1 as u32, ..Default::default() };
    ioctl_on(fd, WARPQ_IOC_INFO, &mut i).map(|_| i)
}

/// `WARPQ_IOC_STATS` with the whole structure (histograms included).
pub fn stats(fd: i32) -> Result<warpq_stats, Errno> {
    let mut s = warpq_stats { size: size_of::<warpq_stats>() as u32, ..Default::default() };
    ioctl_on(fd, WARPQ_IOC_STATS, &mut s).map(|_| s)
}

/// Pages the queue of this process on `fd` has pinned now (`STATS`).
pub fn pinned(fd: i32) -> Result<u64, Errno> {
    stats(fd).map(|s| s.pages_pinned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_abi() {
        assert_eq!(ioc(3, WARPQ_IOC_MAGIC, 0x01, size_of::<warpq_register>() as u32), WARPQ_IOC_REGISTER);
        assert_eq!(STATS_V1, 248);
        assert_eq!(Errno(libc::EINVAL).to_string(), "EINVAL");
        assert_eq!(Errno(4095).name(), "errno 4095");
    }

    #[test]
    fn bad_descriptors_are_refused() {
        assert_eq!(ioctl(-1, WARPQ_IOC_INFO, 0), Err(Errno(libc::EBADF)));
        assert_eq!(info(-1).map(|_| ()), Err(Errno(libc::EBADF)));
    }
}
