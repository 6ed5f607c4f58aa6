//! A corrupted ring: indices out of range or moved under the kernel, a
//! garbage header, a full completion queue, entries torn while the engine
//! reads them, a process killed while its ring replays, more queues on a
//! file than it holds.
//!
//! What the driver does, as these rows assert: a tail more than a ring
//! ahead of (or behind) the head is ignored until fixed; a corrupt `cq_head`
//! stalls that queue's engine until fixed (WAIT then reports the CQ full);
//! the kernel keeps its own copies of the indices it owns (`sq_head`,
//! `cq_tail`) and only publishes them to the shared page, so rewriting them
//! there steers nothing: no slot runs twice, no completion is withheld, and
//! the next completion publishes them right again (`driver/ring.rs`).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use warpq::sys::*;

use super::*;
use crate::harness::{self, Exit};
use crate::raw::header::*;
use crate::raw::{mmap, submit, wait};
use crate::{PinCounts, Rng};

const SECOND: Duration = Duration::from_secs(10);

pub(super) fn cases() -> Vec<Case> {
    vec![
        story(
            "ring-sq-invalid",
            "3 entries that complete INVALID: the header's sq_invalid grows by 3",
            Expect::Ok,
            sq_invalid,
        ),
        story(
            "ring-tail-ahead",
            "sq_tail written 257 and 2^31 entries ahead of sq_head, SUBMIT and WAIT meanwhile, then restored: ignored \
             (nothing taken or completed, SUBMIT queues 0, WAIT times out with 0); after restoring, the entry runs",
            Expect::Ok,
            tail_ahead,
        ),
        story(
            "ring-tail-backwards",
            "sq_tail written 1 and 256 entries behind sq_head, then restored: ignored; after restoring, work runs",
            Expect::Ok,
            tail_backwards,
        ),
        story(
            "ring-sq-head",
            "the kernel-owned sq_head moved back by 2, then 5 past sq_tail: ignored (no old slot runs again); the next \
             NOP runs and publishes sq_head right again",
            Expect::Ok,
            sq_head,
        ),
        story(
            "ring-cq-tail",
            "the kernel-owned cq_tail moved 600 past cq_head, a NOP queued: ignored: the NOP completes, WAIT reports \
             1 ready, and cq_tail is published right again",
            Expect::Ok,
            cq_tail,
        ),
        story(
            "ring-cq-head",
            "cq_head moved 1 past cq_tail and 600 behind it, a NOP queued, then restored: the engine stalls, WAIT \
             returns at once with 512 ready; after restoring, the NOP completes",
            Expect::Ok,
            |env| {
                let behind = 600u32.wrapping_neg();
                cq_stall(
                    env,
                    &[
                        ("cq_head 1 past cq_tail", CQ_HEAD, CQ_TAIL, 1),
                        ("cq_head 600 behind", CQ_HEAD, CQ_TAIL, behind),
                    ],
                )
            },
        ),
        story(
            "ring-header-scribble",
            "magic, version, geometry, offsets, owner_id and flags overwritten with garbage; NOPs through the ring \
             and SUBMIT: all complete OK; the kernel rewrites none of these fields (only its own flag bits)",
            Expect::Ok,
            header_scribble,
        ),
        story(
            "ring-cq-overflow",
            "768 NOPs published, none reaped, then all reaped: exactly 512 complete while the CQ is full (none \
             overwritten), the rest wait; all 768 arrive in order",
            Expect::Ok,
            cq_overflow,
        ),
        story(
            "exit-hostile-ring",
            "a process keeps its ring full of 1 MiB FILLs while a thread rewinds sq_head a ring back and consumes \
             completions forever: no entry runs twice (completions never outnumber entries), more than a ring's worth \
             completes; SIGKILLed with FILLs in flight, it dies within 30 s; every pin is released",
            Expect::Ok,
            exit_hostile,
        ),
        story(
            "ring-torn-entries",
            "1500 valid entries through the ring while another thread rewrites random SQE words: every completion has \
             a valid status (0..=8) and zero reserved fields; no hang",
            Expect::Ok,
            torn_entries,
        ),
        story(
            "ring-queue-limit",
            "one file shared by 64 processes that each touched its ring (64 queues: the file's limit); a 65th process \
             touches the ring: its fault cannot create a queue, and it dies of SIGBUS",
            Expect::Signal(libc::SIGBUS),
            queue_limit,
        ),
    ]
}

fn sq_invalid(env: &Env) -> Result<Got, String> {
    let (dev, ring, buf, _) = setup(env, 4)?;
    let invalid = |fd| want_ok("STATS", raw::stats(fd)).map(|s| s.commands_by_status[WARPQ_STATUS_INVALID as usize]);
    let before = (ring.sq_invalid(), invalid(fd_of(&dev))?);
    let fill = op::Fill::new(buf.addr(0), 64, 0);
    let bad = [raw_entry(0xff, 0, 0, 0, 0), op::Fill::new(buf.addr(0), 0, 0).build(), with_rsvd(fill, 0, 1, [0, 0])];
    for c in ring.run_batch(&bad)? {
        ensure!(c.status == WARPQ_STATUS_INVALID, "entry {}: {}", c.user_data, st(c.status));
    }
    let after = (ring.sq_invalid(), invalid(fd_of(&dev))?);
    ensure!(
        after.0 == before.0 + 3,
        "sq_invalid {} -> {} while STATS counted {} INVALID completions (the header field is never written)",
        before.0,
        after.0,
        after.1 - before.1
    );
    Ok(Got::ok(format!("sq_invalid {} -> {}", before.0, after.0)))
}

fn tail_ahead(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = map_ring(fd)?;
    let head = ring.get(SQ_HEAD);
    ring.write_sqe(head, nop().user_data(0xa0).as_raw());
    let one = [*nop().user_data(0xa1).as_raw()];
    for ahead in [WARPQ_SQ_ENTRIES + 1, 1 << 31] {
        ring.set(SQ_TAIL, head.wrapping_add(ahead));
        ring.stays_quiet(200).map_err(|e| format!("sq_tail {ahead} ahead: {e}"))?;
        let n = want_ok("SUBMIT meanwhile", submit(fd, one.as_ptr() as u64, 1))?;
        ensure!(n == 0, "SUBMIT with sq_tail {ahead} ahead queued {n}");
        ensure!(ring.get(SQ_TAIL) == head.wrapping_add(ahead), "SUBMIT rewrote the corrupt sq_tail");
        let r = wait(fd, 1, 100_000_000);
        ensure!(r == Ok(0), "WAIT with sq_tail {ahead} ahead: {}", raw::show(&r));
        ensure!(ring.sq_invalid() == 0, "sq_invalid moved to {}", ring.sq_invalid());
    }
    ring.set(SQ_TAIL, head.wrapping_add(1));
    ring.kick()?;
    let c = ring.reap(SECOND)?;
    ensure!(c.user_data == 0xa0 && c.status == WARPQ_STATUS_OK, "after restoring: {:#x} {}", c.user_data, st(c.status));
    ensure!(ring.run(nop())?.status == WARPQ_STATUS_OK, "a NOP afterwards");
    Ok(Got::ok(
        "tails 257 and 2^31 ahead ignored (nothing taken, SUBMIT queued 0, WAIT timed out with 0); restored: the \
         entry ran",
    ))
}

/// A ring with two NOPs run through it.
fn two_nops(env: &Env) -> Result<(Device, RawRing), String> {
    let dev = open(env)?;
    let ring = map_ring(fd_of(&dev))?;
    ring.run_batch(&[nop(), nop()])?;
    ring.settle()?;
    Ok((dev, ring))
}

fn tail_backwards(env: &Env) -> Result<Got, String> {
    let (_dev, ring) = two_nops(env)?;
    let tail = ring.get(SQ_TAIL);
    for back in [1u32, WARPQ_SQ_ENTRIES] {
        ring.set(SQ_TAIL, tail.wrapping_sub(back));
        ring.stays_quiet(200).map_err(|e| format!("sq_tail {back} behind: {e}"))?;
    }
    ring.set(SQ_TAIL, tail);
    let c = ring.run(nop())?;
    ensure!(c.status == WARPQ_STATUS_OK, "a NOP after restoring: {}", st(c.status));
    Ok(Got::ok("tails 1 and 256 behind the head ignored; restored: work runs"))
}

fn sq_head(env: &Env) -> Result<Got, String> {
    let (_dev, ring) = two_nops(env)?;
    let tail = ring.get(SQ_TAIL);
    for (what, head) in [("moved back by 2", tail.wrapping_sub(2)), ("moved 5 past sq_tail", tail.wrapping_add(5))] {
        // Under the old contract the first replayed the 2 old slots; the
        // second made the ring look corrupt.
        let tail = ring.get(SQ_TAIL);
        ring.set(SQ_HEAD, head);
        ring.stays_quiet(200).map_err(|e| format!("sq_head {what}: {e}"))?;
        // A NOP written past the page's sq_head check (RawRing::push would
        // call the ring full).
        ring.write_sqe(tail, nop().user_data(0x5e).as_raw());
        ring.set(SQ_TAIL, tail.wrapping_add(1));
        ring.kick()?;
        let c = ring.reap(SECOND)?;
        let ok = c.user_data == 0x5e && c.status == WARPQ_STATUS_OK;
        ensure!(ok, "sq_head {what}, then a NOP: {:#x} {} (an old slot ran again?)", c.user_data, st(c.status));
        ring.settle()?;
        let now = ring.get(SQ_HEAD);
        ensure!(
            now == tail.wrapping_add(1),
            "sq_head {what}: published as {now} after the NOP, not {}",
            tail.wrapping_add(1)
        );
    }
    Ok(Got::ok("sq_head moved back 2 and 5 past the tail: ignored, no slot ran twice; the next NOP published it right"))
}

fn cq_tail(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let ring = map_ring(fd_of(&dev))?;
    ring.run(nop())?;
    let (head, tail) = (ring.get(CQ_HEAD), ring.get(CQ_TAIL));
    ring.set(CQ_TAIL, head.wrapping_add(600));
    ring.push(nop().user_data(0xc1))?;
    ring.kick()?;
    let r = wait(ring.fd(), 1, 5_000_000_000);
    ensure!(r == Ok(1), "WAIT with cq_tail 600 ahead in the page: {}", raw::show(&r));
    let now = ring.get(CQ_TAIL);
    ensure!(now == tail.wrapping_add(1), "cq_tail published as {now}, not {}", tail.wrapping_add(1));
    let c = ring.pop().ok_or("no completion at the published cq_tail")?;
    ensure!(c.user_data == 0xc1 && c.status == WARPQ_STATUS_OK, "the NOP: {:#x} {}", c.user_data, st(c.status));
    Ok(Got::ok("cq_tail 600 ahead in the page: ignored; the NOP completed, WAIT said 1 ready, cq_tail published right"))
}

/// For each `(what, index, from, by)`: sets `index` to `from + by`, which
/// makes the CQ look full or corrupt; a NOP must then stay queued and WAIT
/// return at once with 512 ready; restoring `index` lets the NOP complete.
fn cq_stall(env: &Env, steps: &[(&str, usize, usize, u32)]) -> Result<Got, String> {
    let dev = open(env)?;
    let ring = map_ring(fd_of(&dev))?;
    ring.run(nop())?;
    for &(what, index, from, by) in steps {
        ring.settle()?;
        let (old, base) = (ring.get(index), ring.get(from));
        ring.set(index, base.wrapping_add(by));
        ring.push(nop().user_data(0xc1))?;
        ring.stays_quiet(200).map_err(|e| format!("{what}: {e}"))?;
        let t = Instant::now();
        let r = wait(ring.fd(), 1, 1_000_000_000);
        let took = t.elapsed();
        ensure!(
            r == Ok(WARPQ_CQ_ENTRIES) && took < Duration::from_millis(500),
            "{what}: WAIT gave {} after {took:?}",
            raw::show(&r)
        );
        ring.set(index, old);
        ring.kick()?;
        let c = ring.reap(SECOND)?;
        ensure!(
            c.user_data == 0xc1 && c.status == WARPQ_STATUS_OK,
            "{what}, restored: {:#x} {}",
            c.user_data,
            st(c.status)
        );
    }
    let list: Vec<&str> = steps.iter().map(|s| s.0).collect();
    Ok(Got::ok(format!(
        "{}: the engine stalled, WAIT returned at once with 512; restored: the NOP completed",
        list.join(", ")
    )))
}

fn header_scribble(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = map_ring(fd)?;
    let garbage =
        [(MAGIC, 0xdead_beef), (VERSION, 7), (SQ_ENTRIES, 1), (CQ_ENTRIES, 0), (SQ_OFFSET, u32::MAX), (CQ_OFFSET, 3)];
    for (off, v) in garbage {
        ring.set(off, v);
    }
    ring.u64_at(OWNER_ID).store(0, Ordering::Relaxed);
    ring.set(FLAGS, u32::MAX);
    let done = ring.run_batch(&[nop(), nop(), nop()])?;
    let statuses: Vec<String> = done.iter().map(|c| st(c.status)).collect();
    ensure!(done.iter().all(|c| c.status == WARPQ_STATUS_OK), "NOPs under a scribbled header: {statuses:?}");
    let one = [*nop().user_data(0x5c).as_raw()];
    ensure!(
        want_ok("SUBMIT", submit(fd, one.as_ptr() as u64, 1))? == 1,
        "SUBMIT under a scribbled header queued nothing"
    );
    ring.kick()?;
    let c = ring.reap(SECOND)?;
    ensure!(
        c.user_data == 0x5c && c.status == WARPQ_STATUS_OK,
        "the SUBMITted NOP: {:#x} {}",
        c.user_data,
        st(c.status)
    );
    for (off, v) in garbage {
        ensure!(ring.get(off) == v, "header word at {off} rewritten: {:#x}", ring.get(off));
    }
    let flags = ring.get(FLAGS);
    ensure!(flags & !0xf == !0xf, "the kernel cleared foreign flag bits: {flags:#x}");
    Ok(Got::ok(format!("4 NOPs OK through a garbage header; the kernel left it as written (flags now {flags:#x})")))
}

fn cq_overflow(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let ring = map_ring(fd_of(&dev))?;
    let total = WARPQ_CQ_ENTRIES + WARPQ_SQ_ENTRIES;
    let mut pushed = 0u32;
    let t = Instant::now();
    while pushed < total {
        ensure!(t.elapsed() < Duration::from_secs(30), "only {pushed} of {total} published in 30 s");
        if ring.push(nop().user_data(u64::from(pushed) + 1)).is_ok() {
            pushed += 1;
        } else {
            ring.kick()?;
            sleep_ms(1);
        }
    }
    ring.kick()?;
    sleep_ms(300);
    let ready = ring.get(CQ_TAIL).wrapping_sub(ring.get(CQ_HEAD));
    let pending = ring.get(SQ_TAIL).wrapping_sub(ring.get(SQ_HEAD));
    ensure!(
        ready == WARPQ_CQ_ENTRIES && pending == total - WARPQ_CQ_ENTRIES,
        "with nothing reaped: {ready} completions, {pending} pending"
    );
    for i in 0..total {
        let c = ring.reap(SECOND)?;
        let ok = c.user_data == u64::from(i) + 1 && c.status == WARPQ_STATUS_OK;
        ensure!(ok, "completion {i}: {:#x} {}", c.user_data, st(c.status));
    }
    Ok(Got::ok(format!("{ready} completed while the CQ was full, {pending} waited; all {total} arrived in order")))
}

/// The process of `exit-hostile-ring`: keeps the ring full of long FILLs
/// while another thread rewinds `sq_head` a ring back (under the old
/// contract: endless replay) and consumes every completion; reports the
/// completions posted and the entries pushed at `progress` (two words of a
/// shared page); runs until killed.
fn hostile(env: &Env, progress: usize) -> Result<(), String> {
    let (_dev, ring, buf, _) = setup(env, 256)?;
    let base = ring.base() as usize;
    std::thread::spawn(move || {
        let word = |off: usize| {
            // SAFETY: a header word of the ring mapping, which stays mapped
            // until this process dies (it never returns).
            unsafe { AtomicU32::from_ptr((base + off) as *mut u32) }
        };
        loop {
            word(CQ_HEAD).store(word(CQ_TAIL).load(Ordering::Acquire), Ordering::Release);
            let tail = word(SQ_TAIL).load(Ordering::Relaxed);
            word(SQ_HEAD).store(tail.wrapping_sub(WARPQ_SQ_ENTRIES), Ordering::Release);
            std::hint::spin_loop();
        }
    });
    // SAFETY: the first two words of a shared page mapped before the fork,
    // never unmapped in this process.
    let [posted, pushed] = [0, 4].map(|off| unsafe { AtomicU32::from_ptr((progress + off) as *mut u32) });
    let mut n = 0u32;
    loop {
        // The page's sq_head is the other thread's; the entries taken are
        // the completions posted (each completes once).
        let done = ring.get(CQ_TAIL);
        while n.wrapping_sub(done) < WARPQ_SQ_ENTRIES {
            ring.write_sqe(n, op::Fill::new(buf.addr(0), buf.len() as u64, 0x5a).build().as_raw());
            n = n.wrapping_add(1);
            ring.set(SQ_TAIL, n);
        }
        pushed.store(n, Ordering::Release);
        posted.store(done, Ordering::Release);
        ring.kick()?;
        sleep_ms(20);
    }
}

fn exit_hostile(env: &Env) -> Result<Got, String> {
    let before = PinCounts::read().map_err(|e| e.to_string())?;
    let page = want_ok("a shared page", mmap(PAGE, PROT_RW, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0))?;
    let progress = page.ptr() as usize;
    let mut child = harness::spawn(|| hostile(env, progress).map_or(1, |()| 0)).map_err(|e| format!("fork: {e}"))?;
    // SAFETY: the first two words of our shared page, written by the child.
    let [posted, pushed] = [0, 4].map(|off| unsafe { AtomicU32::from_ptr((progress + off) as *mut u32) });
    // Until more than a ring's worth has completed.
    let t = Instant::now();
    while posted.load(Ordering::Acquire) <= WARPQ_SQ_ENTRIES && t.elapsed() < Duration::from_secs(60) {
        if let Some(e) = child.try_wait() {
            return Err(format!("the hostile process ended by itself ({e})"));
        }
        sleep_ms(100);
    }
    let (done, sent) = (posted.load(Ordering::Acquire), pushed.load(Ordering::Acquire));
    child.kill(libc::SIGKILL).map_err(|e| format!("kill: {e}"))?;
    let t = Instant::now();
    let exit = child.wait(Duration::from_secs(30));
    let took = t.elapsed();
    ensure!(done > WARPQ_SQ_ENTRIES, "only {done} completions in 60 s under the rewinding thread");
    ensure!(done <= sent, "{done} completions for {sent} entries: the rewound sq_head made the engine replay");
    match exit {
        Exit::Signal(_) => {}
        Exit::TimedOut => return Err("the hostile process did not die within 30 s of SIGKILL".into()),
        e => return Err(format!("the hostile process ended with {e}")),
    }
    before.wait_back(SECOND).map_err(|e| format!("after the death: {e}"))?;
    Ok(Got::ok(format!(
        "{done} completions for {sent} entries under a rewinding thread (no replay); killed with FILLs in flight: gone \
         in {took:.1?}, every pin released"
    )))
}

/// Rewrites random words of random SQ slots until `stop`; returns how many.
fn scribble(ring: &RawRing, stop: &AtomicBool, seed: u64, buf: u64) -> u64 {
    let mut rng = Rng(seed);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let slot = rng.below(u64::from(WARPQ_SQ_ENTRIES)) as u32;
        let word = rng.below(8) as usize;
        let v = match (rng.below(4), word) {
            (0, _) => rng.next_u64(),
            (1, 0) => rng.below(6),
            (1, _) => buf + rng.below(80 * 1024),
            (2, _) => rng.below(16 * 1024),
            _ => 0,
        };
        ring.u64_at(RawRing::sqe_offset(slot) + word * 8).store(v, Ordering::Relaxed);
        n += 1;
        if n % 256 == 0 {
            std::thread::yield_now();
        }
    }
    n
}

fn torn_entries(env: &Env) -> Result<Got, String> {
    const TOTAL: u64 = 1500;
    let (_dev, ring, buf, _) = setup(env, 16)?;
    let base = buf.addr(0);
    let stop = AtomicBool::new(false);
    let mut statuses = [0u64; 9];
    let writes = AtomicU64::new(0);
    std::thread::scope(|s| -> Result<(), String> {
        s.spawn(|| writes.store(scribble(&ring, &stop, 0x70a2, base), Ordering::Relaxed));
        let result = (|| -> Result<(), String> {
            let mut rng = Rng(0x1e57);
            let (mut sent, mut seen) = (0u64, 0u64);
            let deadline = Instant::now() + Duration::from_secs(90);
            while seen < TOTAL {
                ensure!(Instant::now() < deadline, "{seen} of {TOTAL} completions in 90 s ({sent} sent)");
                while sent < TOTAL && ring.get(SQ_TAIL).wrapping_sub(ring.get(SQ_HEAD)) < WARPQ_SQ_ENTRIES {
                    let len = 1 + rng.below(8 * 1024);
                    let off = rng.below(16 * PAGE as u64 - len);
                    let e = match rng.below(4) {
                        // A random 64-bit value, upper bits too.
                        0 => raw_entry(WARPQ_OP_FILL, 0, base + off, len, rng.next_u64()),
                        1 => op::Crc32c::new(base + off, len).build(),
                        2 => op::Copy::new(base + off, base + rng.below(16 * PAGE as u64 - len), len).build(),
                        _ => nop(),
                    };
                    ring.push(e.user_data(sent))?;
                    sent += 1;
                }
                ring.kick()?;
                let mut any = false;
                while let Some(c) = ring.pop() {
                    any = true;
                    ensure!(c.status <= WARPQ_STATUS_FAULT_NOMEM, "completion {seen}: status {}", c.status);
                    ensure!(
                        c.rsvd == 0 && c.rsvd2 == 0,
                        "completion {seen}: reserved fields {:#x} {:#x}",
                        c.rsvd,
                        c.rsvd2
                    );
                    let fine = c.status == WARPQ_STATUS_OK || c.result == 0;
                    ensure!(fine, "completion {seen}: {} with result {:#x}", st(c.status), c.result);
                    statuses[c.status as usize] += 1;
                    seen += 1;
                }
                if !any {
                    want_ok("WAIT", wait(ring.fd(), 1, 20_000_000))?;
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        result
    })?;
    let parts: Vec<String> =
        statuses.iter().enumerate().filter(|(_, &n)| n > 0).map(|(s, n)| format!("{n} {}", st(s as u32))).collect();
    let writes = writes.load(Ordering::Relaxed);
    Ok(Got::ok(format!("{TOTAL} completions under {writes} random SQE writes, all valid: {}", parts.join(", "))))
}

/// Holds 64 queues on one file from 64 processes, then touches the ring
/// from this one: the fault cannot create a 65th queue (EMFILE), which the
/// fault handler turns into SIGBUS. Returns only if the touch worked.
fn queue_limit(env: &Env) -> Result<Got, String> {
    const QUEUES: usize = 64;
    let dev = open(env)?;
    let ring = map_ring(fd_of(&dev))?;
    let (ready_r, ready_w) = pipe()?;
    let (hold_r, hold_w) = pipe()?;
    let mut holders = Vec::new();
    for _ in 0..QUEUES {
        let holder = harness::spawn(|| {
            // SAFETY: our copies of the ends this process does not use; the
            // hold pipe then ends when the row's process does.
            unsafe {
                [ready_r, hold_w].into_iter().for_each(|fd| {
                    libc::close(fd);
                })
            };
            let magic = ring.get(MAGIC);
            // SAFETY: one byte to our pipe, then a read that blocks until
            // the row's process is gone; our descriptors.
            unsafe {
                libc::write(ready_w, [u8::from(magic == WARPQ_RING_MAGIC)].as_ptr().cast(), 1);
                libc::close(ready_w);
                libc::read(hold_r, [0u8; 1].as_mut_ptr().cast(), 1);
            }
            0
        });
        holders.push(holder.map_err(|e| format!("fork: {e}"))?);
    }
    // SAFETY: our copy of the write end: the pipe ends once every holder
    // has written (or died).
    unsafe { libc::close(ready_w) };
    let mut got = 0;
    let mut byte = [0u8; 1];
    // SAFETY: reads from our pipe into our byte.
    while got < QUEUES && unsafe { libc::read(ready_r, byte.as_mut_ptr().cast(), 1) } == 1 && byte[0] == 1 {
        got += 1;
    }
    let touched = (got == QUEUES).then(|| ring.get(MAGIC));
    for h in holders {
        let _ = h.kill(libc::SIGKILL);
        h.wait(SECOND);
    }
    ensure!(got == QUEUES, "only {got} of {QUEUES} processes got a queue on the shared file");
    Ok(Got::ok(format!("the 65th process's touch of the ring worked (magic {:#x})", touched.unwrap_or(0))))
}

/// A pipe's read and write ends.
fn pipe() -> Result<(i32, i32), String> {
    let mut p = [0; 2];
    // SAFETY: pipe writes two descriptors into `p`.
    ensure!(unsafe { libc::pipe(p.as_mut_ptr()) } == 0, "pipe: {}", Errno::last());
    Ok((p[0], p[1]))
}
