//! Commands overtaking one that waits for a rebuild
//! (`warpq-invalidate-check overtake`).
//!
//! A registered buffer of four chunks (of `chunk_kb`, read from the module) has a
//! page of its chunk 0 dropped (`MADV_DONTNEED`); the rebuild of that chunk
//! is held back by the fault injection `fail_rebuild_delay_ms`. A FILL into
//! the dropped page (A) waits for the rebuild; behind it:
//!
//! - without `WARPQ_SQE_UNORDERED`, FILLs into chunks 1–3 complete after A,
//!   in submission order;
//! - with it, they complete while A still waits, and the commands behind A
//!   that touch chunk 0 (a FILL of A's bytes, a COPY within chunk 0) still
//!   complete after A, in order: the last FILL's bytes are what stays, and
//!   the COPY reads what was there before.
//!
//! First, `submit_and_wait(1)` on the waiting FILL alone must wait for it
//! (user space counts `sq_tail - sq_head` as in flight).
//!
//! The completion queue is polled with plain reads only: an ioctl such as
//! WAIT would rebuild at once (after the same injected delay).

use std::time::{Duration, Instant};

use warpq::{opcode, Device, Entry, Status};

use crate::param::ParamGuard;
use crate::Anon;

use super::PAGE;

/// How long a rebuild waits before it starts (`fail_rebuild_delay_ms`).
const DELAY_MS: u64 = 400;

/// Runs the two rounds; one line of what happened.
pub fn overtake(dev: &Device) -> Result<String, String> {
    let _delay = ParamGuard::set("fail_rebuild_delay_ms", &DELAY_MS.to_string())?;
    let mut q = dev.queue().map_err(|e| format!("queue: {e}"))?;
    let chunk = crate::param::chunk_bytes()?;
    let buf = Anon::new(4 * chunk);
    let rw = warpq::sys::WARPQ_ACCESS_READ | warpq::sys::WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffer while it is registered.
    let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), rw) }.map_err(|e| format!("register: {e}"))?;
    let at = |n: usize, page: usize| buf.addr(n * chunk + page * PAGE);
    let byte = |n: usize, page: usize| {
        // SAFETY: inside the mapping, which lives as long as `buf`.
        unsafe { std::ptr::read_volatile(buf.ptr().add(n * chunk + page * PAGE)) }
    };
    // A rebuild worker queued by the previous round may still sleep in its
    // injected delay (it checked for work before it slept); woken, it
    // would rebuild the next round's teardown at once. Let any such run
    // finish first: a run started by the last round ends within two
    // delays (one queued behind a running one waits for it).
    let settle = || std::thread::sleep(Duration::from_millis(2 * DELAY_MS + 200));
    let drop_page = || {
        // SAFETY: our own mapping; the registration survives (its chunk is
        // torn down and rebuilt on demand).
        unsafe { libc::madvise(buf.ptr().add(PAGE).cast(), PAGE, libc::MADV_DONTNEED) };
    };
    // SAFETY: as for `byte`; page 2 of chunk 0 is the COPY's source.
    unsafe { std::ptr::write_bytes(buf.ptr().add(2 * PAGE), 0x33, PAGE) };

    // Round 0: a command that waits for a rebuild is still in flight for
    // `submit_and_wait` (sq_head must not pass it before it completes).
    drop_page();
    q.submission().push(&Fill::at(at(0, 1), 0x11, 1).entry()).map_err(|e| format!("push: {e}"))?;
    let t0 = Instant::now();
    let ready = q.submit_and_wait(1).map_err(|e| format!("submit_and_wait: {e}"))?;
    let waited = t0.elapsed();
    let first = q.completion().next().map(|c| (c.user_data(), c.status()));
    if ready < 1 || first != Some((1, Status::Ok)) {
        return Err(format!(
            "submit_and_wait(1) on a FILL that waits for its chunk's rebuild returned {ready} after {waited:?} \
             with {first:?}: the command must count as in flight until it completes"
        ));
    }

    // Round 1: in order.
    settle();
    drop_page();
    let mut ordered = vec![Fill::at(at(0, 1), 0x11, 1)];
    ordered.extend((1..4).map(|k| Fill::at(at(k, 5), k as u8, 10 + k as u64)));
    let got = run(&mut q, ordered.iter().map(|f| f.entry()).collect())?;
    let ids: Vec<u64> = got.iter().map(|c| c.0).collect();
    if ids != [1, 11, 12, 13] {
        return Err(format!("without UNORDERED, completions must come in submission order: got {ids:?}"));
    }
    // The round means something only if the first FILL did wait.
    if got[0].2 < Duration::from_millis(DELAY_MS * 3 / 4) {
        return Err(format!(
            "the FILL into the dropped page completed after {:?}: it did not wait for a rebuild",
            got[0].2
        ));
    }

    // Round 2: chunks 1-3 overtake; chunk 0 keeps its order.
    settle();
    drop_page();
    let mut entries = vec![Fill::at(at(0, 1), 0x11, 1).entry()];
    entries.push(Fill::at(at(0, 1), 0x22, 2).entry().unordered());
    entries.push(opcode::Copy::new(at(0, 2), at(0, 9), 64).build().user_data(3).unordered());
    entries.extend((1..4).map(|k| Fill::at(at(k, 7), 0x40 + k as u8, 10 + k as u64).entry().unordered()));
    let got = run(&mut q, entries)?;
    let ids: Vec<u64> = got.iter().map(|c| c.0).collect();
    let pos = |id: u64| ids.iter().position(|&i| i == id).unwrap_or(usize::MAX);
    if [11, 12, 13].iter().any(|&b| pos(b) > pos(1)) {
        return Err(format!("UNORDERED commands on other chunks must overtake the one that waits: got {ids:?}"));
    }
    if !(pos(1) < pos(2) && pos(2) < usize::MAX && pos(1) < pos(3) && pos(3) < usize::MAX) {
        return Err(format!("commands on the waiting command's chunk must stay behind it: got {ids:?}"));
    }
    let first_b = got.iter().find(|c| c.0 >= 10).map(|c| c.2).unwrap_or_default();
    let a = got.iter().find(|c| c.0 == 1).map(|c| c.2).unwrap_or_default();
    let (after_fill, copied) = (byte(0, 1), byte(0, 9));
    if after_fill != 0x22 || copied != 0x33 || (1..4).any(|k| byte(k, 7) != 0x40 + k as u8) {
        return Err(format!(
            "bytes: chunk 0 page 1 {after_fill:#x} (want 0x22, the later FILL), COPY destination {copied:#x} (want 0x33), \
             chunk FILLs {:?}",
            (1..4).map(|k| byte(k, 7)).collect::<Vec<_>>()
        ));
    }
    dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
    Ok(format!(
        "submit_and_wait waits for a command set aside; in order without UNORDERED; with it, 3 FILLs on other chunks completed {} ms after submission, {} ms before \
         the command waiting for its chunk's rebuild (injected delay {DELAY_MS} ms); the 2 behind it on its chunk \
         completed after it; order {ids:?}; bytes verified",
        first_b.as_millis(),
        a.saturating_sub(first_b).as_millis()
    ))
}

struct Fill {
    dst: u64,
    value: u8,
    id: u64,
}

impl Fill {
    fn at(dst: u64, value: u8, id: u64) -> Self {
        Fill { dst, value, id }
    }

    fn entry(&self) -> Entry {
        opcode::Fill::new(self.dst, 64, self.value).build().user_data(self.id)
    }
}

/// Submits `entries` and reaps their completions by polling the ring (no
/// system call but the submission's wake-up): `(user_data, status, time
/// since submission)`, in completion order. Every one must be OK.
fn run(q: &mut warpq::Queue<'_>, entries: Vec<Entry>) -> Result<Vec<(u64, Status, Duration)>, String> {
    for e in &entries {
        q.submission().push(e).map_err(|e| format!("push: {e}"))?;
    }
    let t0 = Instant::now();
    q.submit().map_err(|e| format!("submit: {e}"))?;
    let mut got = Vec::new();
    while got.len() < entries.len() {
        if t0.elapsed() > Duration::from_secs(20) {
            return Err(format!("only {} of {} completions after 20 s: {got:?}", got.len(), entries.len()));
        }
        for c in q.completion() {
            got.push((c.user_data(), c.status(), t0.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if let Some(bad) = got.iter().find(|c| c.1 != Status::Ok) {
        return Err(format!("command {} completed {:?}: {got:?}", bad.0, bad.1));
    }
    Ok(got)
}
