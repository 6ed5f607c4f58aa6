//! The ring mapping: mmap with wrong flags, offsets and sizes; mremap,
//! mprotect, munmap and madvise of the ring; many mappings; a read-only
//! file.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use warpq::sys::*;

use super::*;
use crate::raw::header::*;
use crate::raw::{madvise, mmap, mprotect, mremap, munmap};

const RING: usize = WARPQ_RING_SIZE;
const SHARED: i32 = libc::MAP_SHARED;
const EINVAL: Expect = Expect::Errno(libc::EINVAL);
const EFAULT: Expect = Expect::Errno(libc::EFAULT);

/// Which descriptor an mmap row maps.
#[derive(Clone, Copy)]
pub enum MapFd {
    /// A fresh read/write file of the device.
    Dev,
    /// The device opened O_RDONLY.
    ReadOnly,
    /// A descriptor that was just closed.
    Closed,
    /// -1.
    MinusOne,
}

/// An mmap row: `mmap(NULL, len, prot, flags, fd, off)`.
pub struct MapRow {
    name: &'static str,
    does: &'static str,
    fd: MapFd,
    len: usize,
    prot: i32,
    flags: i32,
    off: i64,
    expect: Expect,
}

const fn map(
    name: &'static str,
    does: &'static str,
    len: usize,
    prot: i32,
    flags: i32,
    off: i64,
    expect: Expect,
) -> MapRow {
    MapRow { name, does, fd: MapFd::Dev, len, prot, flags, off, expect }
}

/// The mmap table.
pub const MMAP: &[MapRow] = &[
    map("mmap-private/rw", "MAP_PRIVATE, read/write", RING, PROT_RW, libc::MAP_PRIVATE, 0, EINVAL),
    map("mmap-private/ro", "MAP_PRIVATE, read-only", RING, libc::PROT_READ, libc::MAP_PRIVATE, 0, EINVAL),
    map(
        "mmap-exec/rwx",
        "PROT_READ|PROT_WRITE|PROT_EXEC",
        RING,
        PROT_RW | libc::PROT_EXEC,
        SHARED,
        0,
        Expect::Errno(libc::EPERM),
    ),
    map(
        "mmap-exec/rx",
        "PROT_READ|PROT_EXEC",
        RING,
        libc::PROT_READ | libc::PROT_EXEC,
        SHARED,
        0,
        Expect::Errno(libc::EPERM),
    ),
    map("mmap-offset/4096", "offset 4096", RING, PROT_RW, SHARED, 4096, EINVAL),
    map("mmap-offset/ring-size", "offset WARPQ_RING_SIZE", RING, PROT_RW, SHARED, RING as i64, EINVAL),
    map("mmap-offset/2-40", "offset 2^40", RING, PROT_RW, SHARED, 1 << 40, EINVAL),
    map("mmap-size/0", "0 bytes", 0, PROT_RW, SHARED, 0, EINVAL),
    map("mmap-size/4096", "4096 bytes", PAGE, PROT_RW, SHARED, 0, EINVAL),
    map("mmap-size/ring-minus-page", "WARPQ_RING_SIZE - 4096 bytes", RING - PAGE, PROT_RW, SHARED, 0, EINVAL),
    map("mmap-size/ring-plus-page", "WARPQ_RING_SIZE + 4096 bytes", RING + PAGE, PROT_RW, SHARED, 0, EINVAL),
    map("mmap-size/two-rings", "2 * WARPQ_RING_SIZE bytes", 2 * RING, PROT_RW, SHARED, 0, EINVAL),
    MapRow {
        fd: MapFd::ReadOnly,
        ..map(
            "mmap-readonly-fd/writable",
            "writable, of an O_RDONLY file",
            RING,
            PROT_RW,
            SHARED,
            0,
            Expect::Errno(libc::EACCES),
        )
    },
    MapRow {
        fd: MapFd::Closed,
        ..map(
            "fd-closed/mmap-closed",
            "the ring of a closed descriptor",
            RING,
            PROT_RW,
            SHARED,
            0,
            Expect::Errno(libc::EBADF),
        )
    },
    MapRow {
        fd: MapFd::MinusOne,
        ..map("fd-closed/mmap-minus-one", "the ring of fd -1", RING, PROT_RW, SHARED, 0, Expect::Errno(libc::EBADF))
    },
];

/// A change to a live ring mapping at `base` (`target`: a free range of
/// the ring's size); the ring must stay where it was and keep working.
type RingOp = fn(base: u64, target: u64) -> Result<(), Errno>;

/// The table of changes to a ring mapping. The calls that the kernel
/// refuses leave it alone; if one went through, the checks that follow
/// touch a mapping that is gone and the row dies with a signal.
const RING_OPS: &[(&str, &str, RingOp, Expect)] = &[
    ("mremap-ring/grow-in-place", "mremap growing the ring in place", |b, _| remap(b, RING, RING + PAGE, 0, 0), EFAULT),
    (
        "mremap-ring/grow-maymove",
        "mremap growing the ring, MAYMOVE",
        |b, _| remap(b, RING, RING + PAGE, MAYMOVE, 0),
        EFAULT,
    ),
    ("mremap-ring/duplicate", "mremap duplicating the ring (old_len 0)", |b, _| remap(b, 0, RING, MAYMOVE, 0), EFAULT),
    ("mremap-ring/shrink", "mremap shrinking the ring", |b, _| remap(b, RING, RING - PAGE, 0, 0), EINVAL),
    (
        "mremap-ring/move",
        "mremap moving the ring",
        |b, t| remap(b, RING, RING, MAYMOVE | libc::MREMAP_FIXED, t),
        EINVAL,
    ),
    (
        "mremap-ring/dontunmap",
        "mremap, DONTUNMAP",
        |b, _| remap(b, RING, RING, MAYMOVE | libc::MREMAP_DONTUNMAP, 0),
        EINVAL,
    ),
    (
        "mmap-exec/mprotect-exec",
        "mprotect of the ring adding PROT_EXEC",
        |b, _| mprotect(b, RING, PROT_RW | libc::PROT_EXEC),
        EACCES,
    ),
    (
        "mprotect-ring/first-page",
        "mprotect of the ring's first page (no split)",
        |b, _| mprotect(b, PAGE, libc::PROT_READ),
        EINVAL,
    ),
    (
        "mprotect-ring/last-page",
        "mprotect of the ring's last page",
        |b, _| mprotect(b + LAST, PAGE, libc::PROT_READ),
        EINVAL,
    ),
    ("munmap-partial/first-page", "munmap of the ring's first page", |b, _| unmap(b, PAGE), EINVAL),
    (
        "munmap-partial/middle-page",
        "munmap of a middle page of the ring",
        |b, _| unmap(b + 3 * PAGE as u64, PAGE),
        EINVAL,
    ),
    ("munmap-partial/last-page", "munmap of the ring's last page", |b, _| unmap(b + LAST, PAGE), EINVAL),
    ("munmap-partial/one-byte", "munmap of 1 byte of the ring", |b, _| unmap(b + PAGE as u64, 1), EINVAL),
    ("madvise-ring/free", "MADV_FREE of the ring", |b, _| advise(b, RING, libc::MADV_FREE), EINVAL),
    ("madvise-ring/wipeonfork", "MADV_WIPEONFORK of the ring", |b, _| advise(b, RING, libc::MADV_WIPEONFORK), EINVAL),
    (
        "madvise-ring/dontfork-page",
        "MADV_DONTFORK of one page of the ring",
        |b, _| advise(b, PAGE, libc::MADV_DONTFORK),
        EINVAL,
    ),
    (
        "madvise-ring/dontfork",
        "MADV_DONTFORK of the whole ring",
        |b, _| advise(b, RING, libc::MADV_DONTFORK),
        Expect::Ok,
    ),
    ("madvise-ring/dofork", "MADV_DOFORK of the whole ring", |b, _| advise(b, RING, libc::MADV_DOFORK), Expect::Ok),
    ("madvise-ring/mlock", "mlock and munlock of the ring", mlock, Expect::Ok),
];

const MAYMOVE: i32 = libc::MREMAP_MAYMOVE;
const LAST: u64 = (RING - PAGE) as u64;
const EACCES: Expect = Expect::Errno(libc::EACCES);

// The ring ops below act on the row's own ring mapping (or its own free
// target range), which nothing else refers to; the ones that succeed
// change no contents, and one that wrongly moved or unmapped the ring
// makes the row die on its next access (a failure, not corruption).

fn remap(old: u64, old_len: usize, new_len: usize, flags: i32, new: u64) -> Result<(), Errno> {
    // SAFETY: see above.
    unsafe { mremap(old, old_len, new_len, flags, new) }.map(drop)
}

fn unmap(addr: u64, len: usize) -> Result<(), Errno> {
    // SAFETY: see above.
    unsafe { munmap(addr, len) }
}

fn advise(addr: u64, len: usize, advice: i32) -> Result<(), Errno> {
    // SAFETY: see above; the ring's pages belong to the kernel.
    unsafe { madvise(addr, len, advice) }
}

fn mlock(base: u64, _: u64) -> Result<(), Errno> {
    // SAFETY: locks and unlocks our ring mapping (no change to contents).
    let r =
        unsafe { (libc::mlock(base as *const libc::c_void, RING), libc::munlock(base as *const libc::c_void, RING)) };
    if r == (0, 0) {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

pub(super) fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = MMAP
        .iter()
        .filter(|m| !m.name.starts_with("fd-"))
        .map(|m| case(m.name, format!("mmap of {}", m.does), m.expect, Box::new(move |env| run_map(env, m))))
        .collect();
    for &(name, does, op, expect) in RING_OPS {
        v.push(case(name, does, expect, Box::new(move |env| run_ring_op(env, op))));
    }
    v.extend([
        story(
            "mprotect-ring/whole",
            "mprotect of the whole ring read-only (the engine completes meanwhile), PROT_NONE, and back: allowed",
            Expect::Ok,
            mprotect_whole,
        ),
        story(
            "munmap-partial/whole",
            "munmap of the whole ring and a new mapping: the new mapping shows the same queue",
            Expect::Ok,
            munmap_whole,
        ),
        story(
            "madvise-ring/dontneed",
            "MADV_DONTNEED of the ring: 0, and the ring's contents survive",
            Expect::Ok,
            dontneed,
        ),
        story(
            "mmap-many",
            "the ring mapped 6 times at once: one queue (same owner_id), a write through one seen through another, \
             work through any",
            Expect::Ok,
            many,
        ),
        story(
            "mmap-readonly-fd/read-only",
            "the device opened O_RDONLY: the ring mapped read-only shows the header; mprotect to writable",
            Expect::Errno(libc::EACCES),
            readonly_fd,
        ),
    ]);
    v
}

/// The rows of the table that belong to `fd-closed`.
pub(super) fn fd_rows() -> Vec<Case> {
    let rows = MMAP.iter().filter(|m| m.name.starts_with("fd-"));
    rows.map(|m| case(m.name, format!("mmap of {}", m.does), m.expect, Box::new(move |env| run_map(env, m)))).collect()
}

fn open_rdonly(env: &Env) -> Result<OwnedFd, String> {
    let path = CString::new(env.path.clone()).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path; returns a new descriptor or -1.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    ensure!(raw >= 0, "open O_RDONLY: {}", Errno::last());
    // SAFETY: a descriptor we just opened and own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn run_map(env: &Env, m: &MapRow) -> Result<Got, String> {
    let dev = open(env)?;
    let rdonly = open_rdonly(env)?;
    // SAFETY: duplicates our descriptor; the copy is closed at once.
    let closed = unsafe { libc::dup(fd_of(&dev)) };
    // SAFETY: closes the copy we own.
    unsafe { libc::close(closed) };
    let fd = match m.fd {
        MapFd::Dev => fd_of(&dev),
        MapFd::ReadOnly => rdonly.as_raw_fd(),
        MapFd::Closed => closed,
        MapFd::MinusOne => -1,
    };
    let r = mmap(m.len, m.prot, m.flags, fd, m.off);
    Ok(Got::call(&r, format!("{} bytes, prot {:#x}, flags {:#x}, offset {:#x}", m.len, m.prot, m.flags, m.off)))
}

fn run_ring_op(env: &Env, op: RingOp) -> Result<Got, String> {
    let dev = open(env)?;
    let ring = map_ring(fd_of(&dev))?;
    let owner = ring.owner_id();
    let target = want_ok("a target", mmap(RING, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0))?;
    let r = op(ring.base(), target.addr(0));
    ensure!(ring.owner_id() == owner, "the ring changed under its address");
    ensure!(ring.run(nop())?.status == WARPQ_STATUS_OK, "the ring afterwards");
    Ok(Got::call(&r, "the ring stayed where it was and works"))
}

fn mprotect_whole(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let ring = map_ring(fd_of(&dev))?;
    ring.push(nop().user_data(0x9e))?;
    want_ok("mprotect read-only", mprotect(ring.base(), RING, libc::PROT_READ))?;
    ring.kick()?;
    let t = Instant::now();
    while ring.get(CQ_TAIL) == ring.get(CQ_HEAD) {
        ensure!(t.elapsed() < Duration::from_secs(10), "no completion while the mapping was read-only");
        sleep_ms(1);
    }
    want_ok("mprotect PROT_NONE", mprotect(ring.base(), RING, libc::PROT_NONE))?;
    want_ok("mprotect read/write", mprotect(ring.base(), RING, PROT_RW))?;
    let c = ring.reap(Duration::from_secs(10))?;
    ensure!(
        c.user_data == 0x9e && c.status == WARPQ_STATUS_OK,
        "the completion posted meanwhile: {:#x} {}",
        c.user_data,
        st(c.status)
    );
    ensure!(ring.run(nop())?.status == WARPQ_STATUS_OK, "the ring afterwards");
    Ok(Got::ok("read-only, PROT_NONE and back allowed (the engine completed meanwhile)"))
}

fn munmap_whole(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let ring = map_ring(fd_of(&dev))?;
    let owner = ring.owner_id();
    ensure!(ring.run(nop())?.status == WARPQ_STATUS_OK, "the first mapping");
    drop(ring);
    let again = map_ring(fd_of(&dev))?;
    ensure!(again.owner_id() == owner, "a new mapping shows owner {}, not {owner}", again.owner_id());
    ensure!(again.run(nop())?.status == WARPQ_STATUS_OK, "the new mapping");
    Ok(Got::ok("the whole unmapped; a new mapping shows the same queue"))
}

fn dontneed(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let ring = map_ring(fd_of(&dev))?;
    ring.run_batch(&[nop(); 3])?;
    ring.settle()?;
    let indices = || [SQ_HEAD, SQ_TAIL, CQ_HEAD, CQ_TAIL].map(|i| ring.get(i));
    let before = indices();
    // SAFETY: advice on our ring mapping; the ring's pages belong to the
    // kernel, so discarding our PTEs loses nothing.
    let r = unsafe { madvise(ring.base(), RING, libc::MADV_DONTNEED) };
    let after = indices();
    ensure!(
        before == after && ring.get(MAGIC) == WARPQ_RING_MAGIC,
        "after MADV_DONTNEED the indices went {before:?} -> {after:?}"
    );
    ensure!(ring.run(nop())?.status == WARPQ_STATUS_OK, "the ring afterwards");
    Ok(Got::call(&r, "the ring's contents survived"))
}

fn many(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let rings = (0..6).map(|_| map_ring(fd_of(&dev))).collect::<Result<Vec<_>, _>>()?;
    ensure!(rings.iter().all(|r| r.owner_id() == rings[0].owner_id()), "owner ids differ between the mappings");
    let pad = std::mem::offset_of!(warpq_ring_header, pad0);
    rings[0].u64_at(pad).store(0x1234_5678, Ordering::Relaxed);
    ensure!(
        rings[5].u64_at(pad).load(Ordering::Relaxed) == 0x1234_5678,
        "a write through one mapping is not seen through another"
    );
    rings[5].push(nop().user_data(0x66))?;
    rings[5].kick()?;
    let c = rings[2].reap(Duration::from_secs(10))?;
    ensure!(
        c.user_data == 0x66 && c.status == WARPQ_STATUS_OK,
        "pushed through one, reaped through another: {:#x} {}",
        c.user_data,
        st(c.status)
    );
    Ok(Got::ok("6 mappings of one queue: same owner id, shared contents, work through any"))
}

fn readonly_fd(env: &Env) -> Result<Got, String> {
    let fd = open_rdonly(env)?;
    let m = want_ok("a read-only mapping", mmap(RING, libc::PROT_READ, SHARED, fd.as_raw_fd(), 0))?;
    // SAFETY: the header page of our read-only mapping.
    let magic = unsafe { std::ptr::read_volatile(m.ptr().cast::<u32>()) };
    ensure!(magic == WARPQ_RING_MAGIC, "the read-only mapping shows magic {magic:#x}");
    let r = mprotect(m.addr(0), RING, PROT_RW);
    Ok(Got::call(&r, "the read-only mapping shows the header"))
}
