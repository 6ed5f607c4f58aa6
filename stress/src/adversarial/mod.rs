//! The adversarial table: misuses of the ABI of `driver/uapi/warpq.h`, each
//! row with the outcome the driver must give.
//!
//! A row ([`Case`]) has a name (`group/row` for rows of a table, the group
//! alone for a case that tells a story), what it does, a typed [`Expect`]
//! and its code, which reports what it saw ([`Got`]). One runner,
//! [`run_isolated`], runs the code in a child process with a time limit
//! (`harness`) and compares what it saw with the row's expectation; the
//! program then runs the post-case check (`check`) after every row.
//!
//! Families are tables, one file per area: [`ioctl`] (request numbers,
//! structure sizes, argument pointers), [`register`] (REGISTER and
//! UNREGISTER), [`regions`] (what happens to registered memory), [`sqe`]
//! (submission entries), [`copy`] (overlapping copies), [`ring`] (a corrupted ring), [`mmap`] (the ring
//! mapping), [`files`] (WAIT, descriptors), [`submit`] (the SUBMIT path). Where the
//! driver defines what happens to a corrupted ring (it ignores a tail more
//! than a ring ahead, stalls on a corrupt completion index, re-reads its
//! own indices from the shared page), the rows assert exactly that.

use std::fmt;
use std::os::fd::AsRawFd;
use std::time::Duration;

use warpq::sys::*;
use warpq::{opcode as op, Device, Entry};

use crate::harness::{self, signal_name, Exit};
use crate::raw::{self, Errno, RawRing};
use crate::Anon;

/// Returns `Err(format!(...))` from the enclosing function unless `cond`.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

pub mod backing;
pub mod copy;
pub mod files;
pub mod ioctl;
pub mod mmap;
pub mod regions;
pub mod register;
pub mod ring;
pub mod sqe;
pub mod submit;

/// A page.
pub const PAGE: usize = 4096;
/// Read and write access for REGISTER.
pub const RW: u32 = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
/// `PROT_READ | PROT_WRITE`.
pub const PROT_RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
/// How long one row may take before it counts as hung and is killed.
pub const CASE_LIMIT: Duration = Duration::from_secs(120);

/// What a row's driver call must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Success (for a story: every step as it states).
    Ok,
    /// This errno.
    Errno(i32),
    /// A completion with this `WARPQ_STATUS_*`.
    Status(u32),
    /// The row's process dies of this signal.
    Signal(i32),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Expect::Ok => f.write_str("success"),
            Expect::Errno(e) => f.write_str(&Errno(e).name()),
            Expect::Status(s) => f.write_str(&st(s)),
            Expect::Signal(s) => write!(f, "death by {}", signal_name(s)),
        }
    }
}

/// What a row's driver call gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Success.
    Ok,
    /// This errno.
    Errno(i32),
    /// A completion with this status.
    Status(u32),
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Seen::Ok => f.write_str("success"),
            Seen::Errno(e) => f.write_str(&Errno(e).name()),
            Seen::Status(s) => f.write_str(&st(s)),
        }
    }
}

/// What a row saw, with a line of detail for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    /// The outcome compared with the row's [`Expect`].
    pub seen: Seen,
    /// What else happened (counts, the steps of a story).
    pub detail: String,
}

impl Got {
    /// Success.
    pub fn ok(detail: impl Into<String>) -> Got {
        Got { seen: Seen::Ok, detail: detail.into() }
    }

    /// A completion status.
    pub fn status(status: u32, detail: impl Into<String>) -> Got {
        Got { seen: Seen::Status(status), detail: detail.into() }
    }

    /// A system call's result.
    pub fn call<T>(r: &Result<T, Errno>, detail: impl Into<String>) -> Got {
        let seen = match r {
            Ok(_) => Seen::Ok,
            Err(e) => Seen::Errno(e.0),
        };
        Got { seen, detail: detail.into() }
    }
}

/// A row's code: what it saw, or `Err` when a step around the checked call
/// went wrong (a side condition: pins left, memory changed...).
pub type Run = Box<dyn Fn(&Env) -> Result<Got, String>>;

/// One row of the table.
pub struct Case {
    /// `group/row`, or the group alone.
    pub name: String,
    /// What it does.
    pub does: String,
    /// What the driver must answer.
    pub expect: Expect,
    /// Its code.
    pub run: Run,
}

impl Case {
    /// The group: the name up to its `/`.
    pub fn group(&self) -> &str {
        self.name.split('/').next().unwrap_or(&self.name)
    }
}

/// A row whose code is a function (a story, or a table row's runner).
pub fn case(name: impl Into<String>, does: impl Into<String>, expect: Expect, run: Run) -> Case {
    Case { name: name.into(), does: does.into(), expect, run }
}

/// A story: a case whose steps need telling, as a function.
pub fn story(name: &str, does: &str, expect: Expect, f: fn(&Env) -> Result<Got, String>) -> Case {
    case(name, does, expect, Box::new(f))
}

/// Every row, in order.
pub fn cases() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(ioctl::cases());
    all.extend(register::cases());
    all.extend(regions::cases());
    all.extend(sqe::cases());
    all.extend(copy::cases());
    all.extend(ring::cases());
    all.extend(mmap::cases());
    all.extend(files::cases());
    all.extend(submit::cases());
    all.extend(backing::cases());
    all
}

/// Compares what a row saw with its expectation: the report's detail, or
/// the failure.
pub fn judge(expect: Expect, got: Result<Got, String>) -> Result<String, String> {
    let got = got.map_err(|e| format!("expected {expect}, but {e}"))?;
    let matches = match (expect, got.seen) {
        (Expect::Ok, Seen::Ok) => true,
        (Expect::Errno(a), Seen::Errno(b)) => a == b,
        (Expect::Status(a), Seen::Status(b)) => a == b,
        _ => false,
    };
    if matches {
        Ok(format!("{}: {}", got.seen, got.detail))
    } else {
        Err(format!("expected {expect}, got {}: {}", got.seen, got.detail))
    }
}

/// Runs one row in a child process with [`CASE_LIMIT`] and judges it.
pub fn run_isolated(env: &Env, case: &Case) -> Result<String, String> {
    let out = harness::run_case(CASE_LIMIT, || judge(case.expect, (case.run)(env)));
    match case.expect {
        Expect::Signal(sig) if !out.reported && out.exit == Exit::Signal(sig) => {
            Ok(format!("killed by {}, as expected", signal_name(sig)))
        }
        _ => out.result,
    }
}

// ---- what the rows share -----------------------------------------------------

/// What the rows need to know, read once by the parent.
pub struct Env {
    /// The device node.
    pub path: String,
    /// Its `WARPQ_IOC_INFO`.
    pub info: warpq_info,
}

/// Opens the device (a fresh file: a fresh set of queues).
pub fn open(env: &Env) -> Result<Device, String> {
    Device::open(&env.path).map_err(|e| format!("open {}: {e}", env.path))
}

/// The device file's descriptor.
pub fn fd_of(dev: &Device) -> i32 {
    dev.as_file().as_raw_fd()
}

/// Maps the ring of `fd`, or says why not.
pub fn map_ring(fd: i32) -> Result<RawRing, String> {
    RawRing::map(fd).map_err(|e| format!("mmap of the ring: {e}"))
}

/// `r` must be the error `want`.
pub fn want_err<T: fmt::Debug>(what: &str, r: Result<T, Errno>, want: i32) -> Result<(), String> {
    match r {
        Err(e) if e.0 == want => Ok(()),
        other => Err(format!("{what}: {}", raw::show(&other))),
    }
}

/// `r` must succeed.
pub fn want_ok<T>(what: &str, r: Result<T, Errno>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Pages the queue of this process on `fd` has pinned.
pub fn pinned(fd: i32) -> Result<u64, String> {
    want_ok("STATS", raw::pinned(fd))
}

/// Pins outstanding system-wide.
pub fn pins_now() -> Result<i128, String> {
    crate::PinCounts::read().map(|c| c.outstanding()).map_err(|e| format!("/proc/vmstat: {e}"))
}

/// A status's name.
pub fn st(status: u32) -> String {
    const NAMES: [&str; 9] = [
        "OK",
        "INVALID",
        "FAULT_UNREGISTERED",
        "FAULT_BOUNDS",
        "FAULT_ACCESS",
        "FAULT_UNMAPPED",
        "FAULT_IOMMU",
        "ABORTED",
        "DEVICE_ERROR",
    ];
    NAMES.get(status as usize).map_or_else(|| format!("status {status}"), |n| n.to_string())
}

/// A deterministic byte pattern.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

/// A NOP (the user crate's builder).
pub fn nop() -> Entry {
    op::Nop::new().build()
}

/// An entry no builder makes: any opcode, addresses and value.
pub fn raw_entry(opcode: u8, src: u64, dst: u64, len: u64, value: u64) -> Entry {
    Entry::from_raw(warpq_sqe { opcode, src, dst, len, value, ..Default::default() })
}

/// `e` with its flags set.
pub fn with_flags(e: impl Into<Entry>, flags: u8) -> Entry {
    Entry::from_raw(warpq_sqe { flags, ..*e.into().as_raw() })
}

/// `e` with its reserved fields set.
pub fn with_rsvd(e: impl Into<Entry>, rsvd0: u16, rsvd1: u32, rsvd2: [u64; 2]) -> Entry {
    Entry::from_raw(warpq_sqe { rsvd0, rsvd1, rsvd2, ..*e.into().as_raw() })
}

/// A fresh device file, its ring, and a zeroed read/write buffer of `pages`
/// pages registered on it (with its handle).
pub fn setup(env: &Env, pages: usize) -> Result<(Device, RawRing, Anon, u64), String> {
    let dev = open(env)?;
    let ring = map_ring(fd_of(&dev))?;
    let buf = Anon::new(pages * PAGE);
    let h = want_ok("REGISTER the buffer", raw::register(fd_of(&dev), buf.addr(0), buf.len() as u64, RW))?;
    Ok((dev, ring, buf, h))
}

/// A memfd of `len` bytes, mapped MAP_SHARED read/write and filled with
/// `fill`: the descriptor (to truncate or read the file) and the mapping.
pub fn memfd_mapped(len: usize, fill: u8) -> Result<(std::os::fd::OwnedFd, raw::Map), String> {
    use std::os::fd::FromRawFd;
    // SAFETY: a NUL-terminated name; returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"warpq-adversarial".as_ptr(), 0) };
    ensure!(fd >= 0, "memfd_create: {}", Errno::last());
    // SAFETY: a descriptor we just created and own.
    let mfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: resizes our memfd.
    ensure!(unsafe { libc::ftruncate(mfd.as_raw_fd(), len as i64) } == 0, "ftruncate: {}", Errno::last());
    let m = want_ok("mmap of the memfd", raw::mmap(len, PROT_RW, libc::MAP_SHARED, mfd.as_raw_fd(), 0))?;
    // SAFETY: our fresh mapping of `len` bytes.
    unsafe { std::ptr::write_bytes(m.ptr(), fill, len) };
    Ok((mfd, m))
}

/// Runs `entries` and reports the one status they all completed with (each
/// with result 0); `Err` if they differ.
pub fn one_status(ring: &RawRing, entries: &[(&str, Entry)]) -> Result<Got, String> {
    let list: Vec<Entry> = entries.iter().map(|e| e.1).collect();
    let done = ring.run_batch(&list)?;
    let first = done[0].status;
    for ((what, _), c) in entries.iter().zip(&done) {
        ensure!(c.status == first, "{what}: {} where {} gave {}", st(c.status), entries[0].0, st(first));
        ensure!(c.status == WARPQ_STATUS_OK || c.result == 0, "{what}: {} with result {:#x}", st(c.status), c.result);
    }
    Ok(Got::status(first, format!("{} entries alike", entries.len())))
}

/// Sleeps `ms` milliseconds.
pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn got(seen: Seen) -> Result<Got, String> {
        Ok(Got { seen, detail: "d".into() })
    }

    #[test]
    fn the_runner_compares_typed_expectations() {
        assert_eq!(judge(Expect::Errno(libc::EINVAL), got(Seen::Errno(libc::EINVAL))), Ok("EINVAL: d".into()));
        assert_eq!(
            judge(Expect::Errno(libc::EFAULT), got(Seen::Errno(libc::EINVAL))),
            Err("expected EFAULT, got EINVAL: d".into())
        );
        assert!(judge(Expect::Status(3), got(Seen::Status(3))).is_ok());
        assert!(judge(Expect::Status(3), got(Seen::Ok)).is_err());
        assert!(judge(Expect::Signal(libc::SIGBUS), got(Seen::Ok)).is_err());
        assert_eq!(judge(Expect::Ok, Err("3 pages pinned".into())), Err("expected success, but 3 pages pinned".into()));
    }

    /// The 70 cases of the table before it became rows: each is a group.
    const CASES_BEFORE_ROWS: [&str; 70] = [
        "ioctl-unknown",
        "ioctl-size-bits",
        "ioctl-short-struct",
        "ioctl-long-struct",
        "ioctl-garbage-struct",
        "ioctl-null-arg",
        "ioctl-kernel-arg",
        "ioctl-readonly-arg-register",
        "ioctl-readonly-arg-submit",
        "reg-null-addr",
        "reg-kernel-addr",
        "reg-wrapping",
        "reg-unaligned",
        "reg-zero-len",
        "reg-access-bits",
        "reg-too-large",
        "reg-max-size",
        "reg-overlap",
        "reg-duplicate",
        "reg-too-many",
        "reg-bad-memory",
        "reg-the-ring",
        "reg-memlock",
        "reg-race",
        "unreg-in-flight",
        "unreg-twice-unknown",
        "mprotect-registered",
        "ring-over-buffer",
        "memfd-truncate",
        "sqe-unregistered",
        "sqe-bounds",
        "sqe-two-regions",
        "sqe-opcode",
        "sqe-flags",
        "sqe-reserved",
        "sqe-zero-len",
        "sqe-huge-len",
        "sqe-access",
        "sqe-copy-overlap-page",
        "sqe-copy-overlap-edu",
        "sqe-copy-overlap-pages",
        "ring-sq-invalid",
        "ring-tail-ahead",
        "ring-tail-backwards",
        "ring-sq-head",
        "ring-cq-tail",
        "ring-cq-head",
        "ring-header-scribble",
        "ring-cq-overflow",
        "exit-hostile-ring",
        "ring-torn-entries",
        "mmap-private",
        "mmap-exec",
        "mmap-offset",
        "mmap-size",
        "mremap-ring",
        "mprotect-ring",
        "munmap-partial",
        "madvise-ring",
        "mmap-many",
        "mmap-readonly-fd",
        "wait-bogus",
        "wait-signal",
        "fd-closed",
        "fd-dup",
        "fd-scm-rights",
        "submit-bad-ptr",
        "submit-partial-fault",
        "submit-concurrent",
        "submit-huge-count",
    ];

    #[test]
    fn names_are_unique_and_every_earlier_case_is_a_group() {
        let all = cases();
        let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate row names");
        for old in CASES_BEFORE_ROWS {
            assert!(all.iter().any(|c| c.group() == old), "no rows for {old}");
        }
    }
}
