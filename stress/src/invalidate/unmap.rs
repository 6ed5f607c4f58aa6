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
/// needs the torn-down chunk makes the engine ask for a rebuild, and the
/// process, which here only sleeps (as one blocked in epoll would), makes
/// no system call beyond the wake-up of an engine that went to sleep:
/// - with the rebuild worker (`rebuild_worker=Y`, the default), a kernel
///   worker maps the chunk and the FILL completes; the ring is not zapped,
///   so reading the completion does not fault;
/// - without it, the engine zaps the ring instead, and the process's next
///   plain read of its completion queue faults and the fault handler
///   rebuilds the chunk.
pub fn touch_rebuilds(dev: &Device) -> Result<String, String> {
    let with_worker = touch_rebuilds_once(dev, true)?;
    let without = {
        let _off = crate::param::ParamGuard::set("rebuild_worker", "N")?;
        touch_rebuilds_once(dev, false)?
    };
    Ok(format!("{with_worker}; {without}"))
}

fn touch_rebuilds_once(dev: &Device, worker: bool) -> Result<String, String> {
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
    // Fault every page of the fresh ring mapping in now, so that a fault
    // counted below is a zap's, not a first touch.
    for off in (0..WARPQ_RING_SIZE).step_by(PAGE) {
        let _ = ring.get(off);
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
    // Sleep without touching the ring (STATS reads counters; it rebuilds
    // nothing): the worker rebuilds and the FILL completes, or the engine
    // zaps the ring.
    let t0 = std::time::Instant::now();
    let mut mid = torn;
    let waiting = |mid: &warpq::sys::warpq_stats| {
        if worker {
            mid.commands_ok == torn.commands_ok
        } else {
            mid.zaps == torn.zaps
        }
    };
    while waiting(&mid) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        mid = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    }
    let slept_ms = t0.elapsed().as_millis();
    if worker {
        if mid.commands_ok != torn.commands_ok + 1 || mid.rebuilds <= torn.rebuilds {
            return Err(format!(
                "with the process asleep, the FILL on the torn-down chunk did not complete: commands ok {} -> {}, \
                 rebuilds {} -> {}",
                torn.commands_ok, mid.commands_ok, torn.rebuilds, mid.rebuilds
            ));
        }
        if mid.zaps != torn.zaps {
            return Err(format!(
                "the rebuild worker succeeded, yet the ring was zapped ({} zaps)",
                mid.zaps - torn.zaps
            ));
        }
    } else {
        // Give a (wrong) rebuild a moment to show itself.
        std::thread::sleep(Duration::from_millis(100));
        mid = dev.stats().map_err(|e| format!("STATS: {e}"))?;
        if mid.zaps == torn.zaps || mid.commands_ok != torn.commands_ok || mid.rebuilds != torn.rebuilds {
            return Err(format!(
                "without the worker, the FILL on the torn-down chunk must zap the ring and wait: zaps {} -> {}, \
                 commands ok {} -> {}, rebuilds {} -> {}",
                torn.zaps, mid.zaps, torn.commands_ok, mid.commands_ok, torn.rebuilds, mid.rebuilds
            ));
        }
    }
    // Poll the completion queue with plain reads only: without the worker,
    // the first one faults and rebuilds.
    let mut completion = None;
    while completion.is_none() && t0.elapsed() < Duration::from_secs(10) {
        completion = ring.pop();
        std::hint::spin_loop();
    }
    let after = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    let c = completion.ok_or("no completion within 10 s of plain polling")?;
    dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
    if c.user_data != 77 || c.status != WARPQ_STATUS_OK || buf.bytes()[PAGE..PAGE + 64].iter().any(|&b| b != 0x6b) {
        return Err(format!("the FILL after the rebuild: user_data {} status {}", c.user_data, c.status));
    }
    if worker {
        if after.faults != mid.faults {
            return Err(format!(
                "reading the completion of an unzapped ring faulted: faults {} -> {}",
                mid.faults, after.faults
            ));
        }
        Ok(format!(
            "rebuild worker on: a teardown zapped nothing; a FILL on the torn-down page completed while the process \
             slept ({slept_ms} ms, rebuilds {} -> {}), no zap, no fault",
            torn.rebuilds, mid.rebuilds
        ))
    } else {
        if after.faults <= mid.faults || after.rebuilds <= mid.rebuilds {
            return Err(format!(
                "the first touch of the ring after the zap did not rebuild: faults {} -> {}, rebuilds {} -> {}",
                mid.faults, after.faults, mid.rebuilds, after.rebuilds
            ));
        }
        Ok(format!(
            "rebuild worker off: the FILL made the engine zap the ring ({} zap); the next plain read of the ring \
             faulted and rebuilt (rebuilds {} -> {}), and the FILL completed",
            mid.zaps - torn.zaps,
            mid.rebuilds,
            after.rebuilds
        ))
    }
}
