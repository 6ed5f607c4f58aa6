//! What happens to registered memory under the device: UNREGISTER and
//! mprotect with commands running, the ring mapped over a buffer, a memfd
//! truncated under its registration.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use warpq::sys::*;

use super::*;
use crate::raw::{mmap_fixed, register, unregister};

pub(super) fn cases() -> Vec<Case> {
    vec![
        story(
            "unreg-in-flight",
            "UNREGISTER of a 4 MiB buffer with 200 FILLs of 1 MiB into it queued and running: it succeeds; \
             completions are OK then FAULT_UNREGISTERED (in that order), all 200 arrive; no byte written after it \
             returned",
            Expect::Ok,
            unreg_in_flight,
        ),
        story(
            "mprotect-registered",
            "mprotect of a registered read/write buffer to read-only with 200 FILLs into it queued and running: OK \
             then FAULT_UNMAPPED (in that order), all 200 arrive; no byte written after mprotect returned; UNREGISTER \
             succeeds",
            Expect::Ok,
            mprotect_registered,
        ),
        story(
            "ring-over-buffer",
            "the ring mapped MAP_FIXED over a registered buffer, then FILL/CRC32C into that buffer (the ring is never \
             pinned for the device); the ring intact; UNREGISTER succeeds",
            Expect::Status(WARPQ_STATUS_FAULT_UNMAPPED),
            ring_over_buffer,
        ),
        story(
            "memfd-truncate",
            "register a shared memfd mapping, truncate the memfd to 0, FILL and CRC32C into it; UNREGISTER succeeds; \
             pins released",
            Expect::Status(WARPQ_STATUS_FAULT_UNMAPPED),
            memfd_truncate,
        ),
    ]
}

/// Queues `n` FILLs of `chunk` bytes over `buf` (4 chunks) and waits until
/// the engine has taken 3.
fn start_fills(ring: &RawRing, buf: &Anon, n: u64, chunk: usize) -> Result<(), String> {
    for i in 0..n {
        ring.push(op::Fill::new(buf.addr((i as usize % 4) * chunk), chunk as u64, i as u8).build().user_data(i + 1))?;
    }
    ring.kick()?;
    let t = Instant::now();
    while ring.get(raw::header::SQ_HEAD) < 3 {
        ensure!(t.elapsed() < Duration::from_secs(20), "the engine did not start in 20 s");
        std::hint::spin_loop();
    }
    Ok(())
}

/// Reaps `n` completions in order: `OK` until the first `fault`, then only
/// `fault`; the counts of each.
fn ok_then(ring: &RawRing, n: u64, fault: u32) -> Result<(u64, u64), String> {
    let (mut ok, mut faulted) = (0, 0);
    for i in 0..n {
        let c = ring.reap(Duration::from_secs(60))?;
        ensure!(c.user_data == i + 1, "completion {} where {} was due", c.user_data, i + 1);
        match c.status {
            WARPQ_STATUS_OK if faulted == 0 => ok += 1,
            s if s == fault => faulted += 1,
            s => return Err(format!("FILL {i}: {} after {ok} OK and {faulted} {}", st(s), st(fault))),
        }
    }
    Ok((ok, faulted))
}

fn unreg_in_flight(env: &Env) -> Result<Got, String> {
    const N: u64 = 200;
    const MIB: usize = 1 << 20;
    let (dev, ring, buf, h) = setup(env, 4 * MIB / PAGE)?;
    let fd = fd_of(&dev);
    start_fills(&ring, &buf, N, MIB)?;
    let mut tries = 0;
    loop {
        tries += 1;
        match unregister(fd, h) {
            Ok(()) => break,
            Err(Errno(libc::EBUSY)) if tries < 10 => continue,
            Err(e) => return Err(format!("UNREGISTER with commands in flight: {e} (try {tries})")),
        }
    }
    let at_unregister = ring.get(raw::header::SQ_HEAD);
    // From now on the device must not write the buffer.
    // SAFETY: our mapping of buf.len() bytes; no Rust reference into it.
    unsafe { std::ptr::write_bytes(buf.ptr(), 0xee, buf.len()) };
    let (ok, faulted) = ok_then(&ring, N, WARPQ_STATUS_FAULT_UNREGISTERED)?;
    ensure!(buf.bytes().iter().all(|&b| b == 0xee), "the device wrote the buffer after UNREGISTER returned");
    ensure!(pinned(fd)? == 0, "{} pages still pinned", pinned(fd)?);
    ensure!(ring.run(nop())?.status == WARPQ_STATUS_OK, "the queue after the UNREGISTER");
    Ok(Got::ok(format!(
        "UNREGISTER returned with the engine at entry {at_unregister} (try {tries}); {ok} OK then {faulted} \
         FAULT_UNREGISTERED; buffer untouched after"
    )))
}

fn mprotect_registered(env: &Env) -> Result<Got, String> {
    const N: u64 = 200;
    const CHUNK: usize = 64 * 1024;
    let (dev, ring, buf, h) = setup(env, 4 * CHUNK / PAGE)?;
    let fd = fd_of(&dev);
    start_fills(&ring, &buf, N, CHUNK)?;
    want_ok("mprotect read-only", raw::mprotect(buf.addr(0), buf.len(), libc::PROT_READ))?;
    let at = ring.get(raw::header::SQ_HEAD);
    // From now on the device must not write the buffer.
    let snapshot = buf.bytes();
    let (ok, faulted) = ok_then(&ring, N, WARPQ_STATUS_FAULT_UNMAPPED)?;
    ensure!(buf.bytes() == snapshot, "the device wrote the buffer after it was made read-only");
    want_ok("mprotect read/write", raw::mprotect(buf.addr(0), buf.len(), PROT_RW))?;
    want_ok("UNREGISTER", unregister(fd, h))?;
    ensure!(pinned(fd)? == 0, "{} pages still pinned", pinned(fd)?);
    Ok(Got::ok(format!(
        "mprotect returned with the engine at entry {at}; {ok} OK then {faulted} FAULT_UNMAPPED; no write after it"
    )))
}

fn ring_over_buffer(env: &Env) -> Result<Got, String> {
    let (dev, ring, buf, h) = setup(env, 16)?;
    let fd = fd_of(&dev);
    ensure!(ring.run(op::Fill::new(buf.addr(0), 64, 1))?.status == WARPQ_STATUS_OK, "a FILL before");
    // SAFETY: replaces the start of our buffer, which only raw pointers
    // (the registration) refer to.
    let over = unsafe { mmap_fixed(buf.addr(0), WARPQ_RING_SIZE, PROT_RW, libc::MAP_SHARED | libc::MAP_FIXED, fd, 0) };
    let over = want_ok("the ring over the buffer", over)?;
    let got = one_status(
        &ring,
        &[
            ("FILL where the ring now is", op::Fill::new(buf.addr(0), 64, 0xee).build()),
            ("FILL into the buffer's remaining pages", op::Fill::new(buf.addr(12 * PAGE), 64, 0xee).build()),
            ("CRC32C where the ring now is", op::Crc32c::new(buf.addr(PAGE), 64).build()),
        ],
    )?;
    // SAFETY: the header page of the ring mapped over the buffer.
    let magic = unsafe { std::ptr::read_volatile(over.ptr().cast::<u32>()) };
    ensure!(magic == WARPQ_RING_MAGIC, "the ring's magic is now {magic:#x}");
    ensure!(buf.bytes()[12 * PAGE..].iter().all(|&b| b == 0), "the buffer's remaining pages changed");
    want_ok("UNREGISTER", unregister(fd, h))?;
    ensure!(pinned(fd)? == 0, "{} pages still pinned", pinned(fd)?);
    Ok(Got { detail: format!("{}; the ring intact; UNREGISTER succeeded", got.detail), ..got })
}

fn memfd_truncate(env: &Env) -> Result<Got, String> {
    let before = pins_now()?;
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = map_ring(fd)?;
    let len = 16 * PAGE;
    let (mfd, m) = memfd_mapped(len, 0x11)?;
    let h = want_ok("REGISTER the memfd mapping", register(fd, m.addr(0), len as u64, RW))?;
    let c = ring.run(op::Fill::new(m.addr(0), PAGE as u64, 0x77))?;
    ensure!(c.status == WARPQ_STATUS_OK, "a FILL before the truncation: {}", st(c.status));
    // SAFETY: truncates our memfd under the registration (the point).
    ensure!(unsafe { libc::ftruncate(mfd.as_raw_fd(), 0) } == 0, "ftruncate 0: {}", Errno::last());
    let got = one_status(
        &ring,
        &[
            ("FILL after the truncation", op::Fill::new(m.addr(0), 64, 0x88).build()),
            ("CRC32C after the truncation", op::Crc32c::new(m.addr(PAGE), 64).build()),
        ],
    )?;
    want_ok("UNREGISTER after the truncation", unregister(fd, h))?;
    drop((m, ring, dev));
    let t = Instant::now();
    while pins_now()? != before && t.elapsed() < Duration::from_secs(5) {
        sleep_ms(20);
    }
    ensure!(pins_now()? == before, "{} pins outstanding, {} before", pins_now()?, before);
    Ok(Got { detail: format!("{}; UNREGISTER succeeded; pins released", got.detail), ..got })
}
