//! REGISTER and UNREGISTER: addresses, lengths, access bits, limits,
//! overlaps, bad memory, the ring itself, handles.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use warpq::sys::*;

use super::*;
use crate::raw::{mmap, mmap_fixed, register, unregister, ABOVE_USER, KERNEL_ADDR, NONCANONICAL, VSYSCALL};
use crate::Rng;

const R: u32 = WARPQ_ACCESS_READ;
const W: u32 = WARPQ_ACCESS_WRITE;

/// The memory under a REGISTER row.
#[derive(Clone, Copy)]
pub enum Mem {
    /// No memory: the address is `at` itself.
    None,
    /// This many fresh read/write pages.
    Anon(usize),
    /// `max_region_bytes` of fresh read/write memory.
    AnonMax,
    /// As `Anon`, with pages `first..first + n` registered read/write first.
    Registered(usize, usize, usize),
    /// 4 pages, unmapped again.
    Unmapped,
    /// 4 PROT_NONE pages.
    ProtNone,
    /// 4 read-only pages.
    ReadOnly,
    /// 3 pages, the middle one unmapped.
    Hole,
    /// 4 pages, the last one read-only.
    LastReadOnly,
    /// This file's ring.
    Ring,
    /// 4 anonymous pages directly followed by a mapping of this file's ring.
    AnonThenRing,
    /// Another file's ring.
    OtherRing,
}

/// A REGISTER row's length.
#[derive(Clone, Copy)]
pub enum Len {
    /// Bytes.
    B(u64),
    /// Pages.
    P(usize),
    /// `max_region_bytes` plus this.
    Max(u64),
}

/// A REGISTER row: `len` bytes at byte `at` of `mem`, with `access`.
pub struct Reg {
    name: &'static str,
    does: &'static str,
    mem: Mem,
    at: u64,
    len: Len,
    access: u32,
    expect: Expect,
}

const fn reg(name: &'static str, does: &'static str, mem: Mem, at: u64, len: Len, access: u32, expect: Expect) -> Reg {
    Reg { name, does, mem, at, len, access, expect }
}

const P: u64 = PAGE as u64;
const EFAULT: Expect = Expect::Errno(libc::EFAULT);
const EINVAL: Expect = Expect::Errno(libc::EINVAL);
const EEXIST: Expect = Expect::Errno(libc::EEXIST);
const E2BIG: Expect = Expect::Errno(libc::E2BIG);
const OK: Expect = Expect::Ok;
const NONCANON: u64 = NONCANONICAL;
const RING: u64 = WARPQ_RING_SIZE as u64;
/// 16 pages with pages 4..12 registered.
const OVERLAP: Mem = Mem::Registered(16, 4, 8);
/// 4 pages, registered.
const TWICE: Mem = Mem::Registered(4, 0, 4);

/// The REGISTER table. A refused registration must pin nothing; an
/// accepted one pins every page and UNREGISTER releases them.
pub const REGISTER: &[Reg] = &[
    reg("reg-null-addr/read", "address 0, READ", Mem::None, 0, Len::P(1), R, EFAULT),
    reg("reg-null-addr/write", "address 0, WRITE", Mem::None, 0, Len::P(1), W, EFAULT),
    reg("reg-null-addr/rw", "address 0, READ|WRITE", Mem::None, 0, Len::P(1), RW, EFAULT),
    reg("reg-kernel-addr/direct-map-r", "the direct map, READ", Mem::None, KERNEL_ADDR, Len::P(1), R, EFAULT),
    reg("reg-kernel-addr/direct-map-rw", "the direct map, READ|WRITE", Mem::None, KERNEL_ADDR, Len::P(1), RW, EFAULT),
    reg("reg-kernel-addr/vsyscall-r", "the vsyscall page, READ", Mem::None, VSYSCALL, Len::P(1), R, EFAULT),
    reg("reg-kernel-addr/vsyscall-rw", "the vsyscall page, READ|WRITE", Mem::None, VSYSCALL, Len::P(1), RW, EFAULT),
    reg("reg-kernel-addr/above-user-r", "just above user space, READ", Mem::None, ABOVE_USER, Len::P(1), R, EFAULT),
    reg("reg-kernel-addr/above-user-rw", "just above user space, RW", Mem::None, ABOVE_USER, Len::P(1), RW, EFAULT),
    reg("reg-kernel-addr/noncanonical-r", "a non-canonical address, R", Mem::None, NONCANON, Len::P(1), R, EFAULT),
    reg("reg-kernel-addr/noncanonical-rw", "a non-canonical address, RW", Mem::None, NONCANON, Len::P(1), RW, EFAULT),
    reg("reg-wrapping/top-page", "2 pages at 2^64 - 4096", Mem::None, 0xffff_ffff_ffff_f000, Len::P(2), RW, EINVAL),
    reg("reg-wrapping/half", "2^63 bytes at 2^63", Mem::None, 1 << 63, Len::B(1 << 63), RW, EINVAL),
    reg("reg-wrapping/kernel", "the direct map to past 2^64", Mem::None, KERNEL_ADDR, Len::B(0x7780 << 32), RW, EINVAL),
    reg("reg-unaligned/addr-8", "address + 8", Mem::Anon(4), 8, Len::P(1), RW, EINVAL),
    reg("reg-unaligned/addr-4095", "address + 4095, 1 byte", Mem::Anon(4), P - 1, Len::B(1), RW, EINVAL),
    reg("reg-unaligned/len-4097", "length 4097", Mem::Anon(4), 0, Len::B(P + 1), RW, EINVAL),
    reg("reg-unaligned/len-512", "length 512", Mem::Anon(4), 0, Len::B(512), RW, EINVAL),
    reg("reg-unaligned/len-3p-1", "length 3 pages - 1", Mem::Anon(4), 0, Len::B(3 * P - 1), RW, EINVAL),
    reg("reg-zero-len/mapped", "0 bytes at a mapped address", Mem::Anon(1), 0, Len::B(0), RW, EINVAL),
    reg("reg-zero-len/null", "0 bytes at address 0", Mem::None, 0, Len::B(0), RW, EINVAL),
    reg("reg-zero-len/kernel", "0 bytes at a kernel address", Mem::None, KERNEL_ADDR, Len::B(0), RW, EINVAL),
    reg("reg-access-bits/0", "access 0", Mem::Anon(1), 0, Len::P(1), 0, EINVAL),
    reg("reg-access-bits/4", "access 4", Mem::Anon(1), 0, Len::P(1), 4, EINVAL),
    reg("reg-access-bits/8", "access 8", Mem::Anon(1), 0, Len::P(1), 8, EINVAL),
    reg("reg-access-bits/rw-4", "access READ|WRITE|4", Mem::Anon(1), 0, Len::P(1), RW | 4, EINVAL),
    reg("reg-access-bits/bit31", "access 0x80000000", Mem::Anon(1), 0, Len::P(1), 0x8000_0000, EINVAL),
    reg("reg-access-bits/all", "access 0xffffffff", Mem::Anon(1), 0, Len::P(1), u32::MAX, EINVAL),
    reg("reg-access-bits/read", "access READ alone", Mem::Anon(1), 0, Len::P(1), R, OK),
    reg("reg-access-bits/write", "access WRITE alone", Mem::Anon(1), 0, Len::P(1), W, OK),
    reg("reg-too-large/max-plus-page", "max_region_bytes + 4 KiB", Mem::None, 0, Len::Max(P), RW, E2BIG),
    reg("reg-too-large/1tib", "1 TiB", Mem::None, 0, Len::B(1 << 40), RW, E2BIG),
    reg("reg-too-large/almost-2-64", "2^64 - 4 KiB bytes", Mem::None, 0, Len::B(0xffff_ffff_ffff_f000), RW, E2BIG),
    reg("reg-max-size", "exactly max_region_bytes", Mem::AnonMax, 0, Len::Max(0), RW, OK),
    reg("reg-overlap/front", "pages 0..8 over 4..12 registered", OVERLAP, 0, Len::P(8), R, EEXIST),
    reg("reg-overlap/back", "pages 8..16 over 4..12 registered", OVERLAP, 8 * P, Len::P(8), R, EEXIST),
    reg("reg-overlap/around", "pages 0..16 over 4..12 registered", OVERLAP, 0, Len::P(16), R, EEXIST),
    reg("reg-overlap/inside", "pages 6..8 inside 4..12 registered", OVERLAP, 6 * P, Len::P(2), R, EEXIST),
    reg("reg-overlap/first-page", "page 4 of 4..12 registered", OVERLAP, 4 * P, Len::P(1), R, EEXIST),
    reg("reg-overlap/last-page", "page 11 of 4..12 registered", OVERLAP, 11 * P, Len::P(1), R, EEXIST),
    reg("reg-overlap/adjacent-before", "pages 0..4 by 4..12 registered", OVERLAP, 0, Len::P(4), RW, OK),
    reg("reg-overlap/adjacent-after", "pages 12..16 by 4..12 registered", OVERLAP, 12 * P, Len::P(4), RW, OK),
    reg("reg-duplicate/same-rw", "a registered range again, READ|WRITE", TWICE, 0, Len::P(4), RW, EEXIST),
    reg("reg-duplicate/same-read", "a registered range again, READ", TWICE, 0, Len::P(4), R, EEXIST),
    reg("reg-duplicate/same-write", "a registered range again, WRITE", TWICE, 0, Len::P(4), W, EEXIST),
    reg("reg-bad-memory/unmapped", "unmapped memory", Mem::Unmapped, 0, Len::P(4), R, EFAULT),
    reg("reg-bad-memory/prot-none", "PROT_NONE memory", Mem::ProtNone, 0, Len::P(4), R, EFAULT),
    reg("reg-bad-memory/readonly-write", "read-only memory for device writes", Mem::ReadOnly, 0, Len::P(4), W, EFAULT),
    reg("reg-bad-memory/readonly-read", "read-only memory for device reads", Mem::ReadOnly, 0, Len::P(4), R, OK),
    reg("reg-bad-memory/hole", "3 pages whose middle one is unmapped", Mem::Hole, 0, Len::P(3), RW, EFAULT),
    reg("reg-bad-memory/last-readonly", "4 pages, the last read-only", Mem::LastReadOnly, 0, Len::P(4), RW, EFAULT),
    reg("reg-the-ring/whole", "the ring mapping", Mem::Ring, 0, Len::B(RING), R, EFAULT),
    reg("reg-the-ring/first-page", "the ring's first page", Mem::Ring, 0, Len::P(1), RW, EFAULT),
    reg("reg-the-ring/anon-and-ring", "4 anonymous pages and a ring page", Mem::AnonThenRing, 0, Len::P(5), RW, EFAULT),
    reg("reg-the-ring/anon-alone", "the 4 anonymous pages before a ring", Mem::AnonThenRing, 0, Len::P(4), RW, OK),
    reg("reg-the-ring/other-file", "another file's ring", Mem::OtherRing, 0, Len::B(RING), R, EFAULT),
];

/// What an UNREGISTER row passes.
#[derive(Clone, Copy)]
enum Handle {
    /// The handle of a registration already undone.
    Freed,
    /// This value.
    Is(u64),
    /// A freed handle's slot with another generation.
    StaleGeneration,
}

/// UNREGISTER: ENOENT for a well-formed unknown handle, EINVAL for a
/// malformed one.
const UNREGISTER: [(&str, &str, Handle, i32); 8] = [
    ("twice", "UNREGISTER twice", Handle::Freed, libc::ENOENT),
    ("handle-0", "handle 0", Handle::Is(0), libc::EINVAL),
    ("generation-0", "handle 0xffff (generation 0)", Handle::Is(0xffff), libc::EINVAL),
    ("all-ones", "handle 2^64 - 1", Handle::Is(u64::MAX), libc::EINVAL),
    ("slot-1024", "slot 1024 (past the table)", Handle::Is((1 << 16) | 1024), libc::EINVAL),
    ("slot-0xffff", "slot 0xffff", Handle::Is((1 << 16) | 0xffff), libc::EINVAL),
    ("empty-slot", "an empty slot", Handle::Is((1 << 16) | 5), libc::ENOENT),
    ("stale-generation", "a stale generation", Handle::StaleGeneration, libc::ENOENT),
];

pub(super) fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = REGISTER
        .iter()
        .map(|r| case(r.name, format!("REGISTER of {}", r.does), r.expect, Box::new(move |env| run_reg(env, r))))
        .collect();
    v.push(story(
        "reg-duplicate/after-unregister",
        "REGISTER of a range after its UNREGISTER: accepted with a new handle",
        Expect::Ok,
        reregister,
    ));
    v.push(story(
        "reg-too-many",
        "max_regions registrations, then one more (refused), then one more after freeing a slot (accepted)",
        Expect::Errno(libc::ENOSPC),
        too_many,
    ));
    v.push(story(
        "reg-memlock",
        "without CAP_IPC_LOCK and with RLIMIT_MEMLOCK 64 KiB: REGISTER of 16 KiB (accepted), then of 256 KiB \
         (pin: ENOMEM; mirror: accepted, nothing is pinned)",
        Expect::Ok,
        memlock,
    ));
    v.push(story(
        "reg-race",
        "4 threads register/unregister overlapping ranges, a 5th unregisters their fresh handles first, while FILLs \
         run into the range: only success, EEXIST, ENOENT (ENOSPC/EBUSY/EAGAIN); each handle unregistered once; \
         nothing pinned",
        Expect::Ok,
        race,
    ));
    for (row, does, handle, errno) in UNREGISTER {
        let run: Run = Box::new(move |env| run_unreg(env, handle));
        v.push(case(format!("unreg-twice-unknown/{row}"), format!("UNREGISTER of {does}"), Expect::Errno(errno), run));
    }
    v
}

/// Builds a row's memory; its base address and what keeps it alive.
fn memory(env: &Env, fd: i32, mem: Mem) -> Result<(u64, Vec<Box<dyn std::any::Any>>), String> {
    let anon = |pages: usize, prot: i32| -> Result<Anon, String> {
        let a = Anon::new(pages * PAGE);
        a.write(&pattern(a.len(), pages as u8));
        want_ok("mprotect", raw::mprotect(a.addr(0), a.len(), prot))?;
        Ok(a)
    };
    let (base, keep): (u64, Vec<Box<dyn std::any::Any>>) = match mem {
        Mem::None => (0, vec![]),
        Mem::AnonMax => {
            let a = Anon::new(env.info.max_region_bytes as usize);
            (a.addr(0), vec![Box::new(a)])
        }
        Mem::Anon(n) => {
            let a = anon(n, PROT_RW)?;
            (a.addr(0), vec![Box::new(a)])
        }
        Mem::Registered(n, first, pages) => {
            let a = anon(n, PROT_RW)?;
            want_ok("the first registration", register(fd, a.addr(first * PAGE), (pages * PAGE) as u64, RW))?;
            (a.addr(0), vec![Box::new(a)])
        }
        Mem::Unmapped => {
            let mut a = Anon::new(4 * PAGE);
            a.unmap();
            (a.addr(0), vec![])
        }
        Mem::ProtNone => {
            let a = anon(4, libc::PROT_NONE)?;
            (a.addr(0), vec![Box::new(a)])
        }
        Mem::ReadOnly => {
            let a = anon(4, libc::PROT_READ)?;
            (a.addr(0), vec![Box::new(a)])
        }
        Mem::Hole => {
            let a = anon(3, PROT_RW)?;
            // SAFETY: the middle page of our mapping; nothing refers to it.
            want_ok("munmap", unsafe { raw::munmap(a.addr(PAGE), PAGE) })?;
            (a.addr(0), vec![Box::new(a)])
        }
        Mem::LastReadOnly => {
            let a = anon(4, PROT_RW)?;
            want_ok("mprotect", raw::mprotect(a.addr(3 * PAGE), PAGE, libc::PROT_READ))?;
            (a.addr(0), vec![Box::new(a)])
        }
        Mem::Ring => {
            let r = map_ring(fd)?;
            (r.base(), vec![Box::new(r)])
        }
        Mem::AnonThenRing => {
            let anon_only = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            let reserve = want_ok("reserve", mmap(4 * PAGE + WARPQ_RING_SIZE, libc::PROT_NONE, anon_only, -1, 0))?;
            // SAFETY: both land inside our fresh reservation, which nothing
            // references; together they replace all of it.
            let (a, r) = unsafe {
                let a = mmap_fixed(reserve.addr(0), 4 * PAGE, PROT_RW, anon_only | libc::MAP_FIXED, -1, 0);
                let r = mmap_fixed(
                    reserve.addr(4 * PAGE),
                    WARPQ_RING_SIZE,
                    PROT_RW,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd,
                    0,
                );
                (want_ok("anonymous pages", a)?, want_ok("the ring after them", r)?)
            };
            reserve.leak();
            // SAFETY: `r` maps the whole ring of `fd`, read/write.
            let r = unsafe { RawRing::from_map(r, fd) };
            (a.addr(0), vec![Box::new(a), Box::new(r)])
        }
        Mem::OtherRing => {
            let dev2 = open(env)?;
            let r = map_ring(fd_of(&dev2))?;
            (r.base(), vec![Box::new(r), Box::new(dev2)])
        }
    };
    Ok((base, keep))
}

fn run_reg(env: &Env, r: &Reg) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let (base, keep) = memory(env, fd, r.mem)?;
    let len = match r.len {
        Len::B(b) => b,
        Len::P(p) => (p * PAGE) as u64,
        Len::Max(plus) => env.info.max_region_bytes + plus,
    };
    let before = pinned(fd)?;
    let t = Instant::now();
    let res = register(fd, base.wrapping_add(r.at), len, r.access);
    let took = t.elapsed();
    let after = pinned(fd)?;
    let detail = match res {
        Err(_) => {
            ensure!(after == before, "a refused REGISTER left {} pages pinned", after - before);
            "nothing pinned".to_string()
        }
        Ok(h) => {
            ensure!(after - before == len / P, "{} pages pinned for {} registered", after - before, len / P);
            want_ok("UNREGISTER", unregister(fd, h))?;
            ensure!(pinned(fd)? == before, "{} pages still pinned after UNREGISTER", pinned(fd)? - before);
            format!("{} pages pinned in {took:.1?}, released by UNREGISTER", len / P)
        }
    };
    for ring in keep.iter().filter_map(|k| k.downcast_ref::<RawRing>()) {
        let magic = ring.get(raw::header::MAGIC);
        ensure!(magic == WARPQ_RING_MAGIC, "the ring's magic is now {magic:#x}");
    }
    Ok(Got::call(&res, detail))
}

fn reregister(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let buf = Anon::new(4 * PAGE);
    let h = want_ok("REGISTER", register(fd, buf.addr(0), buf.len() as u64, RW))?;
    want_ok("UNREGISTER", unregister(fd, h))?;
    let h2 = want_ok("REGISTER after UNREGISTER", register(fd, buf.addr(0), buf.len() as u64, RW))?;
    ensure!(h2 != h, "the new registration reuses the old handle {h:#x}");
    want_ok("UNREGISTER", unregister(fd, h2))?;
    Ok(Got::ok(format!("re-registered with a new handle ({h:#x} -> {h2:#x})")))
}

fn too_many(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let n = env.info.max_regions as usize;
    let buf = Anon::new((n + 1) * PAGE);
    let mut handles = Vec::new();
    for i in 0..n {
        handles.push(want_ok(&format!("region {i}"), register(fd, buf.addr(i * PAGE), P, RW))?);
    }
    let extra = register(fd, buf.addr(n * PAGE), P, RW);
    if let Ok(h) = extra {
        handles.push(h);
    } else {
        want_ok("UNREGISTER", unregister(fd, handles.remove(0)))?;
        handles.push(want_ok("once a slot is free", register(fd, buf.addr(n * PAGE), P, RW))?);
    }
    for h in handles {
        want_ok("UNREGISTER", unregister(fd, h))?;
    }
    ensure!(pinned(fd)? == 0, "{} pages still pinned", pinned(fd)?);
    Ok(Got::call(&extra, format!("{n} regions accepted; the next one once a slot was freed")))
}

/// Drops CAP_IPC_LOCK from this process's effective set.
pub(super) fn drop_ipc_lock() -> Result<(), String> {
    const CAP_IPC_LOCK: u32 = 14;
    // `struct __user_cap_header_struct` (version 3) and two data words.
    let mut hdr: [u32; 2] = [0x2008_0522, 0];
    let mut data = [[0u32; 3]; 2];
    // SAFETY: capget (version 3) writes two data structures into `data`.
    if unsafe { libc::syscall(libc::SYS_capget, hdr.as_mut_ptr(), data.as_mut_ptr()) } != 0 {
        return Err(format!("capget: {}", Errno::last()));
    }
    data[0][0] &= !(1 << CAP_IPC_LOCK);
    // SAFETY: capset (version 3) reads two data structures from `data`.
    if unsafe { libc::syscall(libc::SYS_capset, hdr.as_mut_ptr(), data.as_ptr()) } != 0 {
        return Err(format!("capset: {}", Errno::last()));
    }
    Ok(())
}

fn memlock(env: &Env) -> Result<Got, String> {
    drop_ipc_lock()?;
    let limit = libc::rlimit { rlim_cur: 16 * P, rlim_max: 16 * P };
    // SAFETY: a valid rlimit for this process.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        return Err(format!("setrlimit: {}", Errno::last()));
    }
    let mirror = env.info.capabilities & WARPQ_CAP_MIRROR != 0;
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let (small, big) = (Anon::new(4 * PAGE), Anon::new(64 * PAGE));
    let h = want_ok("16 KiB within the limit", register(fd, small.addr(0), small.len() as u64, RW))?;
    let r = register(fd, big.addr(0), big.len() as u64, RW);
    if let Ok(h2) = r {
        let _ = unregister(fd, h2);
    }
    // The refused chunk (64 pages) is larger than the whole limit: nothing
    // was evicted for it.
    ensure!(r.is_ok() || pinned(fd)? == 4, "{} pages pinned (the refused registration left pins)", pinned(fd)?);
    want_ok("UNREGISTER", unregister(fd, h))?;
    // The mirror backing pins nothing, so RLIMIT_MEMLOCK does not apply.
    if mirror {
        want_ok("mirror: 256 KiB over a 64 KiB RLIMIT_MEMLOCK", r)?;
        return Ok(Got::ok("mirror: 16 KiB, then 256 KiB over a 64 KiB RLIMIT_MEMLOCK, both accepted"));
    }
    ensure!(matches!(r, Err(Errno(libc::ENOMEM))), "pin: 256 KiB over a 64 KiB RLIMIT_MEMLOCK gave {}", raw::show(&r));
    Ok(Got::ok("pin: 16 KiB accepted first; then ENOMEM for 256 KiB over a 64 KiB RLIMIT_MEMLOCK"))
}

fn race(env: &Env) -> Result<Got, String> {
    const ITER: u64 = 100;
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = map_ring(fd)?;
    let buf = Anon::new(16 * PAGE);
    let base = buf.addr(0);
    let ranges = [(0, 4), (2, 4), (4, 4), (8, 8), (12, 4)];
    let done = AtomicUsize::new(0);
    let bad = std::sync::Mutex::new(None::<String>);
    // Registered, refused, unregistered by the thief, owner found its handle gone.
    let counts: [AtomicUsize; 4] = Default::default();
    let fresh = AtomicU64::new(0);
    let mut statuses = [0u64; 9];
    let fail = |e: String| *bad.lock().unwrap() = Some(e);
    std::thread::scope(|s| -> Result<(), String> {
        for t in 0..4u64 {
            let (done, counts, fresh, fail) = (&done, &counts, &fresh, &fail);
            s.spawn(move || {
                let mut rng = Rng(0x5eed + t);
                for _ in 0..ITER {
                    let (p, n) = ranges[rng.below(ranges.len() as u64) as usize];
                    match register(fd, base + (p * PAGE) as u64, (n * PAGE) as u64, RW).map_err(|e| e.0) {
                        Ok(h) => {
                            counts[0].fetch_add(1, Ordering::Relaxed);
                            fresh.store(h, Ordering::Release);
                            std::thread::yield_now();
                            match unregister(fd, h).map_err(|e| e.0) {
                                Ok(()) => {}
                                Err(libc::ENOENT) => drop(counts[3].fetch_add(1, Ordering::Relaxed)),
                                Err(e) => fail(format!("UNREGISTER of its own handle: {}", Errno(e))),
                            }
                        }
                        Err(libc::EEXIST | libc::ENOSPC | libc::EBUSY | libc::EAGAIN) => {
                            counts[1].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => fail(format!("REGISTER: {}", Errno(e))),
                    }
                }
                done.fetch_add(1, Ordering::Release);
            });
        }
        // The thief: unregisters the handles the others just got.
        let (done, counts, fresh, fail) = (&done, &counts, &fresh, &fail);
        s.spawn(move || {
            while done.load(Ordering::Acquire) < 4 {
                let h = fresh.swap(0, Ordering::AcqRel);
                if h == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                match unregister(fd, h).map_err(|e| e.0) {
                    Ok(()) => drop(counts[2].fetch_add(1, Ordering::Relaxed)),
                    Err(libc::ENOENT | libc::EBUSY) => {}
                    Err(e) => fail(format!("UNREGISTER of another thread's handle: {}", Errno(e))),
                }
            }
            done.fetch_add(1, Ordering::Release);
        });
        // Meanwhile: FILLs into the contested range, with random 64-bit
        // values (the engine takes the low byte).
        let mut rng = Rng(0xf111);
        let deadline = Instant::now() + Duration::from_secs(90);
        while done.load(Ordering::Acquire) < 5 {
            ensure!(Instant::now() < deadline, "the racing threads did not finish in 90 s");
            let batch: Vec<Entry> = (0..16)
                .map(|_| {
                    let len = 1 + rng.below(2 * P);
                    let off = rng.below(16 * P - len);
                    raw_entry(WARPQ_OP_FILL, 0, base + off, len, rng.next_u64())
                })
                .collect();
            for c in ring.run_batch(&batch)? {
                let allowed = [
                    WARPQ_STATUS_OK,
                    WARPQ_STATUS_FAULT_UNREGISTERED,
                    WARPQ_STATUS_FAULT_BOUNDS,
                    WARPQ_STATUS_FAULT_UNMAPPED,
                ];
                ensure!(allowed.contains(&c.status), "a FILL during the race: {}", st(c.status));
                statuses[c.status as usize] += 1;
            }
        }
        Ok(())
    })?;
    if let Some(e) = bad.into_inner().unwrap() {
        return Err(e);
    }
    ensure!(pinned(fd)? == 0, "{} pages pinned after every registration was undone", pinned(fd)?);
    let h = want_ok("the whole range afterwards", register(fd, base, 16 * P, RW))?;
    want_ok("UNREGISTER", unregister(fd, h))?;
    let c = |i: usize| counts[i].load(Ordering::Relaxed);
    ensure!(c(2) == c(3), "the thief unregistered {} handles but {} owners found theirs gone", c(2), c(3));
    Ok(Got::ok(format!(
        "{} registered, {} refused (overlap), {} unregistered by the thief first (each exactly once); FILLs: {} OK, \
         {} UNREGISTERED, {} BOUNDS, {} UNMAPPED; nothing left",
        c(0),
        c(1),
        c(2),
        statuses[0],
        statuses[2],
        statuses[3],
        statuses[5]
    )))
}

fn run_unreg(env: &Env, handle: Handle) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let buf = Anon::new(PAGE);
    let h = want_ok("REGISTER", register(fd, buf.addr(0), P, RW))?;
    want_ok("UNREGISTER", unregister(fd, h))?;
    let handle = match handle {
        Handle::Freed => h,
        Handle::Is(v) => v,
        Handle::StaleGeneration => (9 << 16) | (h & 0xffff),
    };
    let r = unregister(fd, handle);
    Ok(Got::call(&r, format!("handle {handle:#x}")))
}
