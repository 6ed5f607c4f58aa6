//! WAIT with bogus arguments and signals; closed, duplicated and passed
//! file descriptors.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warpq::sys::*;

use super::ioctl::{ioctl_case, Arg, Fd};
use super::*;
use crate::harness;
use crate::raw::{register, unregister, wait, IOCTLS};
use crate::{recv_fd, send_fd};

pub(super) fn cases() -> Vec<Case> {
    let mut v = vec![
        story(
            "wait-bogus",
            "WAIT with timeout 0, i64::MIN and i64::MAX (min_ready 0), min_ready 2^32-1 for 50 ms, nonzero rsvd: each \
             returns without error in bounded time with the ready count; min_ready is capped at the CQ size",
            Expect::Ok,
            wait_bogus,
        ),
        story(
            "wait-signal",
            "WAIT with no timeout and min_ready 2^32-1 in a thread, then SIGUSR1 (handler without SA_RESTART): it \
             blocks until the signal",
            Expect::Errno(libc::EINTR),
            wait_signal,
        ),
    ];
    for (fd, which) in [(Fd::Closed, "closed"), (Fd::MinusOne, "minus-one")] {
        for (name, req, _) in IOCTLS {
            let (row, does) =
                (format!("fd-closed/{}-{which}", name.to_lowercase()), format!("{name} on a {which} descriptor"));
            v.push(ioctl_case(row, does, fd, req, Arg::Buf, libc::EBADF));
        }
    }
    v.extend(super::mmap::fd_rows());
    v.push(story(
        "fd-dup",
        "a dup'ed descriptor: ring via each, REGISTER via one, UNREGISTER via the other, close the original: one \
         queue (same owner_id); both work; the dup keeps working after the close",
        Expect::Ok,
        dup,
    ));
    v.push(story(
        "fd-scm-rights",
        "the fd passed to another process with SCM_RIGHTS; it FILLs, CRCs and COPYs out of the owner's buffer \
         (FAULT_UNREGISTERED: its own queue, new owner_id), UNREGISTERs the owner's handle (ENOENT); the owner's \
         buffer unchanged",
        Expect::Ok,
        scm_rights,
    ));
    v
}

fn wait_bogus(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = map_ring(fd)?;
    let timed = |min_ready: u32, timeout: i64| {
        let t = Instant::now();
        (wait(fd, min_ready, timeout), t.elapsed())
    };
    let quick = Duration::from_millis(500);
    for (what, min_ready, timeout) in [
        ("timeout 0", 1, 0),
        ("min_ready 0, timeout i64::MIN", 0, i64::MIN),
        ("min_ready 0, timeout i64::MAX", 0, i64::MAX),
    ] {
        let (r, took) = timed(min_ready, timeout);
        ensure!(r == Ok(0) && took < quick, "WAIT {what}: {} after {took:?}", raw::show(&r));
    }
    let (r, took) = timed(u32::MAX, 50_000_000);
    ensure!(
        r == Ok(0) && took >= Duration::from_millis(40) && took < Duration::from_secs(2),
        "WAIT min_ready 2^32-1 for 50 ms: {} after {took:?}",
        raw::show(&r)
    );
    for _ in 0..3 {
        ring.push(nop())?;
    }
    ring.kick()?;
    let (r, took) = timed(2, 5_000_000_000);
    ensure!(
        matches!(r, Ok(2..=3)) && took < Duration::from_secs(5),
        "WAIT for 2 of 3 NOPs: {} after {took:?}",
        raw::show(&r)
    );
    let (r, _) = timed(u32::MAX, 50_000_000);
    ensure!(r == Ok(3), "WAIT min_ready 2^32-1 with 3 ready: {}", raw::show(&r));
    let mut w = warpq_wait { size: 24, rsvd: 0xffff_ffff, min_ready: 1, ready: 0, timeout_ns: 0 };
    let r = raw::ioctl_on(fd, WARPQ_IOC_WAIT, &mut w);
    ensure!(r.is_ok() && w.ready == 3, "WAIT with rsvd 0xffffffff: {} ready {}", raw::show(&r), w.ready);
    Ok(Got::ok(
        "timeouts 0, i64::MIN, i64::MAX (nothing wanted) returned at once; min_ready 2^32-1 waited its 50 ms; ready \
         counts right",
    ))
}

extern "C" fn on_signal(_: libc::c_int) {}

fn wait_signal(env: &Env) -> Result<Got, String> {
    use std::os::unix::thread::JoinHandleExt;
    let dev = open(env)?;
    let fd = fd_of(&dev);
    // SAFETY: a zeroed sigaction is valid; the handler does nothing.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
    sa.sa_flags = 0;
    // SAFETY: installs a handler for SIGUSR1 in this (forked, single-row) process.
    ensure!(unsafe { libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) } == 0, "sigaction: {}", Errno::last());
    let finished = Arc::new(AtomicBool::new(false));
    let flag = finished.clone();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let r = wait(fd, u32::MAX, -1);
        flag.store(true, Ordering::Release);
        (r, t.elapsed())
    });
    sleep_ms(300);
    ensure!(!finished.load(Ordering::Acquire), "WAIT with no timeout returned by itself");
    let t = Instant::now();
    while !finished.load(Ordering::Acquire) {
        ensure!(t.elapsed() < Duration::from_secs(5), "WAIT did not return within 5 s of SIGUSR1");
        // SAFETY: the waiter thread is alive (it has not finished).
        unsafe { libc::pthread_kill(waiter.as_pthread_t(), libc::SIGUSR1) };
        sleep_ms(50);
    }
    let (r, took) = waiter.join().map_err(|_| "the waiter panicked".to_string())?;
    Ok(Got::call(&r, format!("blocked {took:.1?}, then SIGUSR1")))
}

fn dup(env: &Env) -> Result<Got, String> {
    let path = CString::new(env.path.clone()).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path; returns a new descriptor or -1.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
    ensure!(fd >= 0, "open: {}", Errno::last());
    // SAFETY: duplicates the descriptor we own.
    let fd2 = unsafe { libc::dup(fd) };
    ensure!(fd2 >= 0, "dup: {}", Errno::last());
    // SAFETY: both descriptors are ours; each is closed once (fd below).
    let _own2 = unsafe { OwnedFd::from_raw_fd(fd2) };
    let (r1, r2) = (map_ring(fd)?, map_ring(fd2)?);
    ensure!(r1.owner_id() == r2.owner_id(), "the dup shows another queue");
    let buf = Anon::new(4 * PAGE);
    let h = want_ok("REGISTER through the original", register(fd, buf.addr(0), buf.len() as u64, RW))?;
    let c = r2.run(op::Fill::new(buf.addr(0), 64, 0x31))?;
    ensure!(c.status == WARPQ_STATUS_OK, "a FILL through the dup's ring: {}", st(c.status));
    want_ok("UNREGISTER through the dup", unregister(fd2, h))?;
    // SAFETY: closes the original, which we own.
    unsafe { libc::close(fd) };
    drop(r1);
    let h2 = want_ok(
        "REGISTER through the dup after closing the original",
        register(fd2, buf.addr(0), buf.len() as u64, RW),
    )?;
    let c = r2.run(op::Fill::new(buf.addr(0), 64, 0x32))?;
    ensure!(
        c.status == WARPQ_STATUS_OK && buf.bytes()[0] == 0x32,
        "a FILL through the dup after the close: {}",
        st(c.status)
    );
    want_ok("UNREGISTER", unregister(fd2, h2))?;
    Ok(Got::ok("one queue through both descriptors; the dup works after the original is closed"))
}

/// The receiving side of `fd-scm-rights`; returns the step that failed.
fn scm_receiver(sock: i32, owner: u64, buf: &Anon, owner_handle: u64) -> Result<(), String> {
    let fd = recv_fd(sock).ok_or("no descriptor received")?;
    let ring = map_ring(fd)?;
    let mine = ring.owner_id();
    ensure!(mine != owner && mine != 0, "the receiver sees the owner's queue");
    let theirs = one_status(
        &ring,
        &[
            ("FILL at the owner's buffer", op::Fill::new(buf.addr(0), 64, 0x33).build()),
            ("CRC32C of the owner's buffer", op::Crc32c::new(buf.addr(0), 64).build()),
            ("COPY out of the owner's buffer", op::Copy::new(buf.addr(0), buf.addr(PAGE), 64).build()),
        ],
    )?;
    ensure!(
        theirs.seen == Seen::Status(WARPQ_STATUS_FAULT_UNREGISTERED),
        "the receiver reached the owner's buffer: {}",
        theirs.seen
    );
    want_err("UNREGISTER of the owner's handle", unregister(fd, owner_handle), libc::ENOENT)?;
    // Its own copy of the same addresses (it is a fork) is its own business.
    let h = want_ok("registering its own copy", register(fd, buf.addr(0), buf.len() as u64, RW))?;
    let c = ring.run(op::Fill::new(buf.addr(0), 64, 0x44))?;
    ensure!(c.status == WARPQ_STATUS_OK && buf.bytes()[0] == 0x44, "its own FILL: {}", st(c.status));
    want_ok("UNREGISTER of its own copy", unregister(fd, h))
}

fn scm_rights(env: &Env) -> Result<Got, String> {
    let (dev, ring, buf, h) = setup(env, 4)?;
    let fd = fd_of(&dev);
    let c = ring.run(op::Fill::new(buf.addr(0), 64, 0x22))?;
    ensure!(c.status == WARPQ_STATUS_OK, "the owner's FILL: {}", st(c.status));
    let owner = ring.owner_id();
    let mut sv = [0; 2];
    // SAFETY: socketpair writes two descriptors into `sv`.
    ensure!(
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) } == 0,
        "socketpair: {}",
        Errno::last()
    );
    // The descriptor waits in the socket for the receiver forked next.
    let sent = send_fd(sv[0], fd);
    let receiver = harness::run_case(Duration::from_secs(60), || {
        // SAFETY: closing our copies of the owner's descriptor and the
        // owner's end, so the received descriptor is the only way in.
        unsafe {
            [fd, sv[0]].into_iter().for_each(|fd| {
                libc::close(fd);
            })
        };
        scm_receiver(sv[1], owner, &buf, h).map(|()| String::new())
    });
    // SAFETY: our ends of the socket pair.
    unsafe {
        sv.into_iter().for_each(|fd| {
            libc::close(fd);
        })
    };
    ensure!(sent, "sendmsg SCM_RIGHTS failed");
    receiver.result.map_err(|e| format!("the receiver: {e}"))?;
    let b = buf.bytes();
    ensure!(b[..64].iter().all(|&x| x == 0x22) && b[64..].iter().all(|&x| x == 0), "the owner's buffer changed");
    want_ok("the owner's UNREGISTER", unregister(fd, h))?;
    Ok(Got::ok(
        "the receiver got its own queue; FILL/CRC32C/COPY at the owner's buffer: FAULT_UNREGISTERED; its UNREGISTER \
         of the owner's handle: ENOENT; the owner's buffer unchanged",
    ))
}
