//! A registered buffer unmapped, or one of its pages dropped, while the
//! device works on it.

use std::time::Duration;

use warpq::sys::*;
use warpq::Device;

use super::PAGE;
use crate::stream::{push_all, reap, sqe};
use crate::Anon;

/// A registered buffer is unmapped while FILL commands into it are queued
/// and running. Every command completes, with success (it ran before) or a
/// fault/abort status; none is lost; the queue counts the teardown; the
/// queue keeps working afterwards.
pub fn munmap_in_flight(dev: &Device) -> Result<String, String> {
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    let pages = 64;
    let mut buf = Anon::new(pages * PAGE);
    let other = Anon::new(16 * PAGE);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffers; `buf` is unmapped
    // under the device on purpose (the point of this test).
    let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), rw) }.map_err(|e| format!("register: {e}"))?;
    // SAFETY: as above.
    let h2 = unsafe { dev.register_raw(other.ptr(), other.len(), rw) }.map_err(|e| format!("register other: {e}"))?;
    let before = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    let n = 240u64;
    let cmds: Vec<_> = (0..n)
        .map(|i| {
            let off = (i as usize * 4 * PAGE) % (buf.len() - 16 * PAGE);
            sqe(WARPQ_OP_FILL, i, 0, buf.addr(off), 16 * PAGE as u64, i & 0xff)
        })
        .collect();
    push_all(&mut q, &cmds[..200])?;
    // Unmap while the engine is in the middle of them: after a few have run.
    let t0 = std::time::Instant::now();
    while q.header().sq_head < 5 && t0.elapsed() < Duration::from_secs(5) {
        std::hint::spin_loop();
    }
    buf.unmap();
    // More after the unmap: they must fault, not touch anything.
    push_all(&mut q, &cmds[200..])?;
    let (mut ok, mut fault, mut aborted) = (0, 0, 0);
    for i in 0..n {
        let c = reap(&mut q)?;
        if c.user_data != i {
            return Err(format!("completion {} out of order (expected {i})", c.user_data));
        }
        match c.status {
            WARPQ_STATUS_OK => ok += 1,
            WARPQ_STATUS_FAULT_UNMAPPED | WARPQ_STATUS_FAULT_UNREGISTERED => fault += 1,
            WARPQ_STATUS_ABORTED => aborted += 1,
            s => return Err(format!("command {i}: unexpected status {s}")),
        }
        if c.status == WARPQ_STATUS_OK && i >= 200 {
            return Err(format!("command {i}, queued after munmap, succeeded"));
        }
    }
    let after = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    if after.teardowns <= before.teardowns {
        return Err("the counters show no teardown".into());
    }
    if after.invalidations_by_event[0] <= before.invalidations_by_event[0] {
        return Err("the counters show no UNMAP invalidation".into());
    }
    let delta = |i: usize| after.commands_by_status[i] - before.commands_by_status[i];
    let counted = (
        delta(WARPQ_STATUS_OK as usize),
        delta(WARPQ_STATUS_FAULT_UNMAPPED as usize) + delta(WARPQ_STATUS_FAULT_UNREGISTERED as usize),
        delta(WARPQ_STATUS_ABORTED as usize),
    );
    if counted != (ok, fault, aborted) {
        return Err(format!(
            "counters by status {counted:?} differ from what the completions said {:?}",
            (ok, fault, aborted)
        ));
    }
    // The queue still works on the other buffer.
    push_all(&mut q, &[sqe(WARPQ_OP_FILL, 9999, 0, other.addr(0), 4096, 0x5a)])?;
    let c = reap(&mut q)?;
    if c.status != WARPQ_STATUS_OK || other.bytes()[..4096].iter().any(|&b| b != 0x5a) {
        return Err(format!("the queue does not work after the munmap (status {})", c.status));
    }
    dev.unregister(h2).map_err(|e| format!("unregister other: {e}"))?;
    // The dead registration can still be dropped.
    dev.unregister(h).map_err(|e| format!("unregister the unmapped buffer: {e}"))?;
    Ok(format!(
        "{n} commands: {ok} done before the unmap, {fault} faulted, {aborted} aborted; teardowns {} -> {}, rebuilds {} -> {}",
        before.teardowns, after.teardowns, before.rebuilds, after.rebuilds
    ))
}

/// A teardown alone zaps nothing: the queue keeps running. A command that
/// needs the torn-down chunk makes the engine ask for a rebuild: the
/// rebuild worker maps the chunk without any help from the process (which
/// here only sleeps, as one blocked in epoll would), and the ring is zapped
/// too, so the process's next plain touch of it faults (and would rebuild,
/// were the worker off). No system call beyond the wake-up of an engine
/// that went to sleep.
pub fn touch_rebuilds(dev: &Device) -> Result<String, String> {
    use crate::raw::{header, RawRing};
    use std::os::fd::AsRawFd;
    let ring = RawRing::map(dev.as_file().as_raw_fd()).map_err(|e| format!("map queue: {e}"))?;
    let buf = Anon::new(16 * PAGE);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffer while registered.
    let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), rw) }.map_err(|e| format!("register: {e}"))?;
    if ring.get(header::MAGIC) != WARPQ_RING_MAGIC {
        return Err(format!("ring magic {:#x}", ring.get(header::MAGIC)));
    }
    let before = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    // SAFETY: our own mapping; the registration survives (torn down).
    unsafe { libc::madvise(buf.ptr().add(PAGE).cast(), PAGE, libc::MADV_DONTNEED) };
    std::thread::sleep(Duration::from_millis(100));
    let torn = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    if torn.teardowns != before.teardowns + 1 || torn.zaps != before.zaps {
        return Err(format!(
            "DONTNEED of a registered page: teardowns {} -> {}, zaps {} -> {} (a teardown alone must not zap)",
            before.teardowns, torn.teardowns, before.zaps, torn.zaps
        ));
    }
    // A FILL into the dropped page, through the ring.
    ring.push(warpq::opcode::Fill::new(buf.addr(PAGE), 64, 0x6b).build().user_data(77))?;
    if ring.get(header::FLAGS) & WARPQ_RING_NEED_WAKEUP != 0 {
        ring.kick()?;
    }
    // Sleep without touching the ring: the engine asks, the worker rebuilds
    // and the FILL completes (STATS reads counters, it rebuilds nothing).
    let t0 = std::time::Instant::now();
    let mut mid = torn;
    while mid.commands_ok == torn.commands_ok && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        mid = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    }
    if mid.commands_ok != torn.commands_ok + 1 || mid.rebuilds <= torn.rebuilds {
        return Err(format!(
            "with the process asleep, the FILL on the torn-down chunk did not complete: commands ok {} -> {}, \
             rebuilds {} -> {}",
            torn.commands_ok, mid.commands_ok, torn.rebuilds, mid.rebuilds
        ));
    }
    if mid.zaps == torn.zaps {
        return Err("the engine's request did not zap the ring".into());
    }
    // The completion, read with plain loads (the first one faults: the ring
    // was zapped).
    let c = ring.pop().ok_or("the completion counted in STATS is not in the ring")?;
    let after = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
    if after.faults <= mid.faults {
        return Err(format!(
            "the first touch of the zapped ring did not fault: faults {} -> {}",
            mid.faults, after.faults
        ));
    }
    if c.user_data != 77 || c.status != WARPQ_STATUS_OK || buf.bytes()[PAGE..PAGE + 64].iter().any(|&b| b != 0x6b) {
        return Err(format!("the FILL after the rebuild: user_data {} status {}", c.user_data, c.status));
    }
    Ok(format!(
        "a teardown zapped nothing; a FILL on the torn-down page completed while the process slept (the rebuild \
         worker: rebuilds {} -> {}, {} ms), the ring was zapped ({} zap) and its next plain read faulted; no system \
         call",
        torn.rebuilds,
        mid.rebuilds,
        t0.elapsed().as_millis(),
        mid.zaps - torn.zaps
    ))
}
