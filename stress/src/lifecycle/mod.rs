//! Lifecycle at the edges: what a queue does when its device goes away
//! under it, and when user space fights the teardown.
//!
//! - [`unbind_under_load`]: one thread blocks in WAIT with no timeout while
//!   another keeps publishing FILLs to a registered buffer; the device is
//!   unbound. From the moment unbind returns no command executes (the
//!   buffer and the completion ring stay as they were), the waiter returns
//!   ENODEV, every pin is released while the file is still open, and the
//!   device binds again at once.
//! - [`wait_while_registering`]: WAIT sleeps while a REGISTER is held
//!   between notifier insertion and arming, both threads on one CPU.
//! - [`rewound_ring`]: a thread rewinds the ring header's indices (all of
//!   them, kernel-owned ones too) as fast as it can while the queue is
//!   closed, then while the device is unbound: both complete.
//!
//! - [`stuck_device`] ([`stuck`]): a device that stops answering
//!   (`fail_edu_stall`): munmap and close complete, what the pending
//!   transfer reaches stays held until the device recovers or is unbound.
//!
//! Each round runs in a child of the harness with a time limit, so a hang
//! is a failed case, not a hung run.

mod stuck;

pub use stuck::stuck_device;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use warpq::opcode;
use warpq::sys::*;

use crate::check::Check;
use crate::harness::run_case;
use crate::mem::Anon;
use crate::raw::{self, header, Errno, RawRing};
use crate::report::Report;

const PAGE: usize = 4096;
const CASE_LIMIT: Duration = Duration::from_secs(60);

/// The bound device: its PCI address and its `/dev` node.
fn bound_device() -> Result<(String, String), String> {
    let dev = warpq::devices().map_err(|e| e.to_string())?.into_iter().next().ok_or("no warpq device bound")?;
    let path = dev.dev_path().ok_or("the bound device has no /dev node")?;
    Ok((dev.pci_address, path.display().to_string()))
}

fn sysfs_driver(what: &str, pci: &str) -> Result<(), String> {
    std::fs::write(format!("{}/{what}", warpq::SYSFS_DRIVER_DIR), pci).map_err(|e| format!("{what} {pci}: {e}"))
}

/// Binds `pci` again and waits (10 s at most) until its node opens.
fn rebind(pci: &str) -> Result<Duration, String> {
    let start = Instant::now();
    sysfs_driver("bind", pci)?;
    loop {
        let node = warpq::devices()
            .ok()
            .and_then(|ds| ds.into_iter().find(|d| d.pci_address == pci))
            .and_then(|d| d.dev_path());
        if let Some(node) = node {
            if warpq::Device::open(&node).is_ok() {
                return Ok(start.elapsed());
            }
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("{pci} did not come back within 10 s of bind"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn open(path: &str) -> Result<i32, String> {
    let cpath = std::ffi::CString::new(path).map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated path.
    let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("open {path}: {}", Errno::last()));
    }
    Ok(fd)
}

/// One round of [`unbind_under_load`], in a child.
fn unbind_round(pins: &Check) -> Result<String, String> {
    let (pci, path) = bound_device()?;
    let fd = open(&path)?;
    let ring = RawRing::map(fd).map_err(|e| format!("map the ring: {e}"))?;
    let buf = Anon::new(4 * PAGE);
    let addr = buf.addr(0);
    raw::register(fd, addr, (4 * PAGE) as u64, WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE)
        .map_err(|e| format!("REGISTER: {e}"))?;
    let stop = AtomicBool::new(false);
    let unbound = AtomicBool::new(false);
    let outcome = std::thread::scope(|s| {
        // The waiter: WAIT for more completions than will ever come, no timeout.
        let waiter = s.spawn(|| raw::wait(fd, WARPQ_CQ_ENTRIES, -1));
        // The publisher: FILLs with a new byte each, consuming completions,
        // until told to stop (it keeps going after unbind).
        let publisher = s.spawn(|| {
            let mut byte = 1u8;
            while !stop.load(Ordering::Relaxed) {
                while ring.pop().is_some() {}
                if ring.push(opcode::Fill::new(addr, (4 * PAGE) as u64, byte).build()).is_ok() {
                    byte = byte.wrapping_add(1).max(1);
                    if !unbound.load(Ordering::Relaxed) {
                        let _ = ring.kick();
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let result = (|| {
            sysfs_driver("unbind", &pci)?;
            unbound.store(true, Ordering::SeqCst);
            // From here on nothing may execute: the buffer, the completion
            // tail and the submission head stay as they are.
            let frozen = (buf.bytes(), ring.get(header::CQ_TAIL), ring.get(header::SQ_HEAD));
            std::thread::sleep(Duration::from_millis(300));
            let now = (buf.bytes(), ring.get(header::CQ_TAIL), ring.get(header::SQ_HEAD));
            if frozen.0 != now.0 {
                return Err("the buffer changed after unbind returned: a command executed".to_string());
            }
            if (frozen.1, frozen.2) != (now.1, now.2) {
                return Err(format!(
                    "the ring moved after unbind: cq_tail {} -> {}, sq_head {} -> {}",
                    frozen.1, now.1, frozen.2, now.2
                ));
            }
            if ring.get(header::FLAGS) & WARPQ_RING_DEAD == 0 {
                return Err(format!("the ring does not show DEAD after unbind (flags {:#x})", ring.get(header::FLAGS)));
            }
            Ok(())
        })();
        stop.store(true, Ordering::SeqCst);
        publisher.join().map_err(|_| "the publisher panicked".to_string())?;
        let waited = waiter.join().map_err(|_| "the waiter panicked".to_string())?;
        result?;
        match waited {
            Err(e) if e.0 == libc::ENODEV => Ok(()),
            other => Err(format!("the waiter got {} (want ENODEV)", raw::show(&other))),
        }
    });
    outcome?;
    // Every pin released while the file is still open.
    pins.pins_back().map_err(|e| format!("with the file still open: {e}"))?;
    let took = rebind(&pci)?;
    drop(ring);
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(fd) };
    Ok(format!("waiter ENODEV, nothing ran after unbind, pins back with the file open, rebound in {took:?}"))
}

/// `rounds` rounds of: WAIT without timeout + a publisher + unbind + rebind.
pub fn unbind_under_load(r: &mut Report, rounds: u32) {
    let mut check = match Check::new() {
        Ok(c) => c,
        Err(e) => return r.fail("unbind-under-load", &e),
    };
    for round in 1..=rounds {
        let name = format!("unbind-under-load round {round}");
        let outcome = run_case(CASE_LIMIT, || unbind_round(&check)).into_result();
        let outcome = outcome.and_then(|m| check.after_case().map(|()| m));
        r.record(&name, &outcome);
        if outcome.is_err() {
            // Leave the device bound for whatever runs next.
            if let Ok(devs) = warpq::devices() {
                if devs.is_empty() {
                    let _ = sysfs_driver("bind", "0000:00:01.0");
                }
            }
            return;
        }
    }
}

/// Rewinds every index of the ring header until `stop`.
fn rewind_until(ring: &RawRing, stop: &AtomicBool) {
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n = n.wrapping_add(1);
        // The kernel's indices rewound, the user's pushed ahead: a naive
        // abort would find an endless supply of entries and room.
        ring.set(header::SQ_HEAD, 0);
        ring.set(header::CQ_TAIL, 0);
        ring.set(header::CQ_HEAD, n.wrapping_mul(7));
        ring.set(header::SQ_TAIL, WARPQ_SQ_ENTRIES - 1);
    }
}

/// One round of [`rewound_ring`]: `unbind` false closes the queue's file,
/// true unbinds the device.
fn rewound_round(unbind: bool) -> Result<String, String> {
    let (pci, path) = bound_device()?;
    let fd = open(&path)?;
    let ring = RawRing::map(fd).map_err(|e| format!("map the ring: {e}"))?;
    let buf = Anon::new(PAGE);
    raw::register(fd, buf.addr(0), PAGE as u64, WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE)
        .map_err(|e| format!("REGISTER: {e}"))?;
    for i in 0..WARPQ_SQ_ENTRIES - 1 {
        ring.write_sqe(i, opcode::Fill::new(buf.addr(0), PAGE as u64, i as u8).build().as_raw());
    }
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let what = std::thread::scope(|s| {
        s.spawn(|| rewind_until(&ring, &stop));
        std::thread::sleep(Duration::from_millis(50));
        // Unbind aborts the queue while the indices keep being rewound.
        let result = if unbind { sysfs_driver("unbind", &pci).map(|()| "unbind") } else { Ok("close") };
        stop.store(true, Ordering::SeqCst);
        result
    })?;
    // Close: the queue is aborted when its file is released (descriptor and
    // mapping gone), with the header left rewound.
    drop(ring);
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(fd) };
    if unbind {
        rebind(&pci)?;
    }
    Ok(format!("{what} completed in {:?} with the ring's indices rewound", start.elapsed()))
}

/// A rewound ring during abort: close completes, unbind completes.
pub fn rewound_ring(r: &mut Report) {
    let mut check = match Check::new() {
        Ok(c) => c,
        Err(e) => return r.fail("rewound-ring", &e),
    };
    for unbind in [false, true] {
        let name = if unbind { "rewound-ring during unbind" } else { "rewound-ring during close" };
        let outcome = run_case(CASE_LIMIT, || rewound_round(unbind)).into_result();
        let outcome = outcome.and_then(|m| check.after_case().map(|()| m));
        r.record(name, &outcome);
    }
}

const ARM_DELAY_PARAM: &str = "/sys/module/warpq/parameters/fail_register_arm_delay_ms";

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Pins the calling process (and the threads it starts later) to CPU 0.
fn pin_to_cpu0() -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU 0 is inside the set's bounds.
    unsafe { libc::CPU_SET(0, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(format!("sched_setaffinity: {}", Errno::last()));
    }
    Ok(())
}

/// One round of [`wait_while_registering`], in a child.
fn wait_round() -> Result<String, String> {
    const DELAY_MS: u64 = 3000;
    const TIMEOUT: Duration = Duration::from_secs(1);
    let (_, path) = bound_device()?;
    pin_to_cpu0()?;
    let fd = open(&path)?;
    let ring = RawRing::map(fd).map_err(|e| format!("map the ring: {e}"))?;
    let a = Anon::new(PAGE);
    let b = Anon::new(PAGE);
    raw::register(fd, a.addr(0), PAGE as u64, WARPQ_ACCESS_READ).map_err(|e| format!("REGISTER a: {e}"))?;
    std::fs::write(ARM_DELAY_PARAM, DELAY_MS.to_string()).map_err(|e| format!("{ARM_DELAY_PARAM}: {e}"))?;
    let result = std::thread::scope(|s| {
        let b_addr = b.addr(0);
        let registrar = s.spawn(move || raw::register(fd, b_addr, PAGE as u64, WARPQ_ACCESS_READ));
        // Inside the window: the REGISTER sleeps between insert and arm.
        std::thread::sleep(Duration::from_millis(200));
        let flags = ring.get(header::FLAGS);
        let (cpu0, wall0) = (thread_cpu_time(), Instant::now());
        let waited = raw::wait(fd, 1, TIMEOUT.as_nanos() as i64);
        let (cpu, wall) = (thread_cpu_time() - cpu0, wall0.elapsed());
        let _ = std::fs::write(ARM_DELAY_PARAM, "0");
        let registered = registrar.join().map_err(|_| "the registrar panicked".to_string())?;
        registered.map_err(|e| format!("the held REGISTER failed: {e}"))?;
        if !matches!(waited, Ok(0)) {
            return Err(format!("WAIT returned {} (want 0 ready at its timeout)", raw::show(&waited)));
        }
        if wall > TIMEOUT + TIMEOUT / 10 {
            return Err(format!("WAIT returned after {wall:?}, more than its timeout {TIMEOUT:?} + 10%"));
        }
        // A WAIT that spins instead of sleeping burns its whole timeout.
        if cpu > TIMEOUT / 2 {
            return Err(format!("WAIT used {cpu:?} of CPU in {wall:?}: it spun instead of sleeping"));
        }
        Ok(format!(
            "WAIT with a REGISTER held between insert and arm (ring flags {flags:#x}), both on CPU 0: returned after {wall:?} using {cpu:?} of CPU"
        ))
    });
    let _ = std::fs::write(ARM_DELAY_PARAM, "0");
    drop(ring);
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(fd) };
    result
}

/// WAIT sleeps, and checks signals, while a REGISTER is held between
/// inserting its notifier and arming its region (fault injection:
/// `fail_register_arm_delay_ms`), with both threads on one CPU.
pub fn wait_while_registering(r: &mut Report) {
    let mut check = match Check::new() {
        Ok(c) => c,
        Err(e) => return r.fail("wait-while-registering", &e),
    };
    let outcome = run_case(CASE_LIMIT, wait_round).into_result();
    let outcome = outcome.and_then(|m| check.after_case().map(|()| m));
    r.record("wait-while-registering", &outcome);
}
