//! Readiness notification: `poll`/`epoll` on `/dev/warpqN`.
//!
//! [`run`] opens two queues (two files of one process) beside an unrelated
//! pipe in one epoll set and checks: nothing is ready before anything is
//! submitted; a completion makes exactly its queue readable (`EPOLLIN`),
//! and reaping it makes it quiet again (level-triggered); the pipe is
//! reported on its own; a stream of `completions` NOPs, each batch waited
//! for in `epoll_wait`, never misses a wake-up (a 5 s wait that returns
//! nothing with a batch outstanding is a failure); unbinding the device
//! reports `EPOLLERR | EPOLLHUP` on both queues. The device is bound again
//! at the end. Before the unbind, an eventfd registered on one queue
//! (`WARPQ_IOC_EVENTFD`) counts its completion batches: 64 NOPs found
//! together by a woken engine are 2 batches of 32.

use std::time::{Duration, Instant};

use warpq::opcode;
use warpq::sys::*;

use crate::raw::{header, Errno, RawRing};
use crate::report::Report;

const MISSED_WAKEUP: Duration = Duration::from_secs(5);

/// An epoll set, closed on drop.
struct Epoll(i32);

impl Epoll {
    fn new() -> Result<Epoll, String> {
        // SAFETY: no pointer arguments.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(format!("epoll_create1: {}", Errno::last()));
        }
        Ok(Epoll(fd))
    }

    fn add(&self, fd: i32, events: u32) -> Result<(), String> {
        let mut ev = libc::epoll_event { events, u64: fd as u64 };
        // SAFETY: `ev` is a valid epoll_event.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(format!("epoll_ctl ADD {fd}: {}", Errno::last()));
        }
        Ok(())
    }

    /// The ready (fd, events) pairs, waiting at most `timeout`.
    fn wait(&self, timeout: Duration) -> Result<Vec<(i32, u32)>, String> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: `evs` has room for the 8 events asked for.
        let n = unsafe { libc::epoll_wait(self.0, evs.as_mut_ptr(), 8, timeout.as_millis() as i32) };
        if n < 0 {
            return Err(format!("epoll_wait: {}", Errno::last()));
        }
        Ok(evs[..n as usize].iter().map(|e| (e.u64 as i32, e.events)).collect())
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.0) };
    }
}

/// One queue: a file, its mapped ring.
struct Queue {
    fd: i32,
    ring: RawRing,
}

impl Queue {
    fn open(path: &str) -> Result<Queue, String> {
        let cpath = std::ffi::CString::new(path).map_err(|e| e.to_string())?;
        // SAFETY: a valid NUL-terminated path.
        let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open {path}: {}", Errno::last()));
        }
        let ring = RawRing::map(fd).map_err(|e| format!("map the ring: {e}"))?;
        Ok(Queue { fd, ring })
    }

    /// Publishes `n` NOPs, waking the engine if it sleeps.
    fn nops(&self, n: u32) -> Result<(), String> {
        for _ in 0..n {
            self.ring.push(opcode::Nop::new().build())?;
        }
        if self.ring.get(header::FLAGS) & WARPQ_RING_NEED_WAKEUP != 0 {
            self.ring.kick()?;
        }
        Ok(())
    }

    /// Consumes every posted completion; fails on a non-OK one.
    fn reap(&self) -> Result<u32, String> {
        let mut n = 0;
        while let Some(c) = self.ring.pop() {
            if c.status != WARPQ_STATUS_OK {
                return Err(format!("a NOP completed with status {}", c.status));
            }
            n += 1;
        }
        Ok(n)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once (the mapping goes with `ring`).
        unsafe { libc::close(self.fd) };
    }
}

fn ready(evs: &[(i32, u32)], fd: i32) -> Option<u32> {
    evs.iter().find(|(f, _)| *f == fd).map(|(_, e)| *e)
}

fn check_readiness(b: &Queue, ep: &Epoll, pipe: [i32; 2]) -> Result<String, String> {
    let idle = ep.wait(Duration::ZERO)?;
    if !idle.is_empty() {
        return Err(format!("ready before anything was submitted: {idle:?}"));
    }
    b.nops(1)?;
    let evs = ep.wait(MISSED_WAKEUP)?;
    let reaped = b.reap()?;
    // epoll reports the events asked for: EPOLLIN.
    if ready(&evs, b.fd) != Some(libc::EPOLLIN as u32) || evs.len() != 1 {
        return Err(format!("after a NOP on queue b: {evs:?} (want only b, EPOLLIN); {reaped} reaped"));
    }
    let after = ep.wait(Duration::ZERO)?;
    if !after.is_empty() {
        return Err(format!("still ready after reaping: {after:?}"));
    }
    // SAFETY: writing one byte from a valid buffer to our pipe.
    unsafe { libc::write(pipe[1], b"x".as_ptr().cast(), 1) };
    let evs = ep.wait(MISSED_WAKEUP)?;
    if evs.len() != 1 || ready(&evs, pipe[0]).is_none() {
        return Err(format!("after a write to the pipe: {evs:?} (want only the pipe)"));
    }
    let mut byte = [0u8; 1];
    // SAFETY: reading one byte into a valid buffer.
    unsafe { libc::read(pipe[0], byte.as_mut_ptr().cast(), 1) };
    Ok("idle: none ready; a NOP on b: only b, EPOLLIN; reaped: none; the pipe: only the pipe".into())
}

fn check_stream(a: &Queue, ep: &Epoll, completions: u32) -> Result<String, String> {
    let start = Instant::now();
    let (mut done, mut waits) = (0u32, 0u32);
    while done < completions {
        let batch = (completions - done).min(64);
        a.nops(batch)?;
        let mut got = 0;
        while got < batch {
            let evs = ep.wait(MISSED_WAKEUP)?;
            waits += 1;
            if evs.is_empty() {
                // Not ready in 5 s with `batch - got` NOPs outstanding.
                let n = a.reap()?;
                return Err(format!(
                    "missed wake-up: epoll_wait returned {evs:?} after {MISSED_WAKEUP:?} with {} NOPs outstanding ({n} were in fact completed) after {done} completions",
                    batch - got
                ));
            }
            got += a.reap()?;
        }
        done += got;
    }
    Ok(format!(
        "{done} completions, each batch waited for in epoll_wait ({waits} waits), none missed, in {:?}",
        start.elapsed()
    ))
}

/// `WARPQ_IOC_EVENTFD` on `fd` (-1: none).
fn set_eventfd(fd: i32, eventfd: i32) -> Result<(), Errno> {
    let mut req = warpq_eventfd { size: std::mem::size_of::<warpq_eventfd>() as u32, fd: eventfd };
    // SAFETY: WARPQ_IOC_EVENTFD reads one warpq_eventfd, which `req` is.
    if unsafe { libc::ioctl(fd, WARPQ_IOC_EVENTFD as _, &mut req) } != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The eventfd's counter, read and reset (0 if it was not signalled).
fn eventfd_take(efd: i32) -> u64 {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into `v`; the eventfd is non-blocking.
    let n = unsafe { libc::read(efd, (&mut v as *mut u64).cast(), 8) };
    if n == 8 {
        v
    } else {
        0
    }
}

/// An eventfd on queue `b`, in the epoll set: the engine asleep, 64 NOPs
/// published, one wake-up: they complete in exactly 2 batches of 32, so
/// the eventfd counts 2 and becomes readable in epoll. A descriptor that
/// is not an eventfd is refused (EINVAL). After `fd -1`, 8 more NOPs leave
/// it at 0.
fn check_eventfd(b: &Queue, ep: &Epoll) -> Result<String, String> {
    // SAFETY: no pointer arguments.
    let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(format!("eventfd: {}", Errno::last()));
    }
    let result = (|| {
        match set_eventfd(b.fd, b.fd) {
            Err(Errno(libc::EINVAL)) => {}
            other => return Err(format!("WARPQ_IOC_EVENTFD with the device's own fd: {other:?}, want EINVAL")),
        }
        set_eventfd(b.fd, efd).map_err(|e| format!("WARPQ_IOC_EVENTFD: {e}"))?;
        ep.add(efd, libc::EPOLLIN as u32)?;
        // The engine asleep (need-wakeup), then all 64 published before the
        // one wake-up: it finds them together.
        let asleep = Instant::now();
        while b.ring.get(header::FLAGS) & WARPQ_RING_NEED_WAKEUP == 0 {
            if asleep.elapsed() > MISSED_WAKEUP {
                return Err("the idle engine never asked for a wake-up".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..64 {
            b.ring.push(opcode::Nop::new().build())?;
        }
        b.ring.kick()?;
        let (mut got, mut efd_ready) = (0, false);
        let start = Instant::now();
        while got < 64 {
            let evs = ep.wait(MISSED_WAKEUP)?;
            efd_ready |= ready(&evs, efd).is_some();
            got += b.reap()?;
            if start.elapsed() > MISSED_WAKEUP {
                return Err(format!("{got} of 64 NOPs completed in {MISSED_WAKEUP:?}"));
            }
        }
        if !efd_ready {
            efd_ready = ready(&ep.wait(Duration::ZERO)?, efd).is_some();
        }
        if !efd_ready {
            // Its signal may follow the completions (see below): wait for
            // it on the eventfd itself.
            let mut pfd = libc::pollfd { fd: efd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd for the duration of the call.
            efd_ready = unsafe { libc::poll(&mut pfd, 1, 1000) } == 1;
        }
        // The engine publishes a batch, then signals: the last batch's
        // signal may follow its completions. Count up to 1 s for it (a
        // third signal would still show).
        let mut signals = eventfd_take(efd);
        let counting = Instant::now();
        while signals < 2 && counting.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(1));
            signals += eventfd_take(efd);
        }
        if signals != 2 || !efd_ready {
            return Err(format!(
                "64 NOPs taken at once: the eventfd counted {signals} batches (want 2 of 32), readable in epoll: \
                 {efd_ready}"
            ));
        }
        set_eventfd(b.fd, -1).map_err(|e| format!("WARPQ_IOC_EVENTFD -1: {e}"))?;
        b.nops(8)?;
        let mut got = 0;
        while got < 8 {
            ep.wait(MISSED_WAKEUP)?;
            got += b.reap()?;
        }
        let after = eventfd_take(efd);
        if after != 0 {
            return Err(format!("the eventfd counted {after} after it was removed"));
        }
        Ok("a non-eventfd refused (EINVAL); 64 NOPs taken at once: 2 eventfd signals (batches of 32), readable in \
            epoll; removed: 8 more NOPs, 0 signals"
            .to_string())
    })();
    // SAFETY: our descriptor, closed once (the epoll set drops it).
    unsafe { libc::close(efd) };
    result
}

fn check_hangup(a: &Queue, b: &Queue, ep: &Epoll, pci: &str) -> Result<String, String> {
    std::fs::write(format!("{}/unbind", warpq::SYSFS_DRIVER_DIR), pci).map_err(|e| format!("unbind: {e}"))?;
    let evs = ep.wait(MISSED_WAKEUP)?;
    let hup = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
    let (ea, eb) = (ready(&evs, a.fd).unwrap_or(0), ready(&evs, b.fd).unwrap_or(0));
    std::fs::write(format!("{}/bind", warpq::SYSFS_DRIVER_DIR), pci).map_err(|e| format!("bind: {e}"))?;
    if ea & hup != hup || eb & hup != hup {
        return Err(format!("after unbind: {evs:?} (want EPOLLERR|EPOLLHUP on both queues)"));
    }
    Ok(format!("after unbind: both queues EPOLLERR|EPOLLHUP ({ea:#x}, {eb:#x}); bound again"))
}

/// Runs the checks above; `completions` NOPs for the stream.
pub fn run(r: &mut Report, completions: u32) -> Result<(), String> {
    let dev = warpq::devices().map_err(|e| e.to_string())?.into_iter().next().ok_or("no warpq device bound")?;
    let path = dev.dev_path().ok_or("the bound device has no /dev node")?.display().to_string();
    let (a, b) = (Queue::open(&path)?, Queue::open(&path)?);
    // Each file's queue exists once its ring is touched.
    let _ = (a.ring.get(header::MAGIC), b.ring.get(header::MAGIC));
    let mut pipe = [0i32; 2];
    // SAFETY: `pipe` has room for two descriptors.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", Errno::last()));
    }
    let ep = Epoll::new()?;
    for fd in [a.fd, b.fd, pipe[0]] {
        ep.add(fd, libc::EPOLLIN as u32)?;
    }
    r.record("poll-readiness", &check_readiness(&b, &ep, pipe));
    r.record("poll-stream", &check_stream(&a, &ep, completions));
    r.record("poll-eventfd", &check_eventfd(&b, &ep));
    r.record("poll-hangup", &check_hangup(&a, &b, &ep, &dev.pci_address));
    for fd in pipe {
        // SAFETY: our descriptors, closed once.
        unsafe { libc::close(fd) };
    }
    Ok(())
}
