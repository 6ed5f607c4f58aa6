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

/// A teardown zaps the ring's user mappings, so the process's next plain
/// touch of the ring faults and the fault handler rebuilds the queue: a
/// process that drives its queue through the ring alone needs no system call
/// to recover from an invalidation.
pub fn touch_rebuilds(dev: &Device) -> Result<String, String> {
    let ring = dev.map_queue().map_err(|e| format!("map queue: {e}"))?;
    let hdr = ring.as_ptr() as *const warpq_ring_header;
    let buf = Anon::new(16 * PAGE);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffer while registered.
    let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), rw) }.map_err(|e| format!("register: {e}"))?;
    // SAFETY: the ring stays mapped while `ring` lives; volatile reads of
    // header fields (this one maps the page).
    let magic = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*hdr).magic)) };
    if magic != WARPQ_RING_MAGIC {
        return Err(format!("ring magic {magic:#x}"));
    }
    let before = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    // SAFETY: our own mapping; the registration survives (torn down).
    unsafe { libc::madvise(buf.ptr().add(PAGE).cast(), PAGE, libc::MADV_DONTNEED) };
    // The zap runs as deferred work: give it time before the touch.
    std::thread::sleep(Duration::from_millis(300));
    let mid = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    // SAFETY: as above; this touch must fault and rebuild first.
    let flags = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*hdr).flags)) };
    let after = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
    if after.faults <= mid.faults || after.rebuilds <= mid.rebuilds || flags & WARPQ_RING_STALE != 0 {
        return Err(format!(
            "the first touch of the ring after a teardown did not rebuild: faults {} -> {}, rebuilds {} -> {}, flags {flags:#x}",
            mid.faults, after.faults, mid.rebuilds, after.rebuilds
        ));
    }
    if mid.teardowns != before.teardowns + 1 || mid.zaps <= before.zaps {
        return Err(format!(
            "DONTNEED of a registered page: teardowns {} -> {}, zaps {} -> {}",
            before.teardowns, mid.teardowns, before.zaps, mid.zaps
        ));
    }
    Ok(format!(
        "a teardown zapped the ring ({} zap); the next plain read of it faulted and rebuilt the queue (rebuilds {} -> {}), no system call",
        mid.zaps - before.zaps,
        mid.rebuilds,
        after.rebuilds
    ))
}
