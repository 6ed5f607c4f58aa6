//! The SUBMIT path: bad entry pointers, a fault part-way, threads at
//! once, more entries than fit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use warpq::sys::*;

use super::*;
use crate::raw::header::*;
use crate::raw::{mprotect, sqe_words, submit, KERNEL_ADDR, NONCANONICAL};

/// Where a SUBMIT row's entries are.
#[derive(Clone, Copy)]
enum At {
    /// This address.
    Addr(u64),
    /// A PROT_NONE page.
    ProtNone,
}

/// SUBMIT of `count` entries at a bad place: nothing may be queued.
const BAD_POINTERS: [(&str, &str, At, u32, Expect); 6] = [
    ("null", "1 entry at null", At::Addr(0), 1, Expect::Errno(libc::EFAULT)),
    ("kernel", "1 entry at a kernel address", At::Addr(KERNEL_ADDR), 1, Expect::Errno(libc::EFAULT)),
    ("noncanonical", "1 entry at a non-canonical address", At::Addr(NONCANONICAL), 1, Expect::Errno(libc::EFAULT)),
    ("prot-none", "1 entry in a PROT_NONE page", At::ProtNone, 1, Expect::Errno(libc::EFAULT)),
    ("wrapping", "1 entry at 2^64 - 64", At::Addr(u64::MAX - 63), 1, Expect::Errno(libc::EFAULT)),
    ("zero-at-null", "0 entries at null (success, 0 submitted)", At::Addr(0), 0, Expect::Ok),
];

pub(super) fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (row, does, at, count, expect) in BAD_POINTERS {
        let run: Run = Box::new(move |env| bad_pointer(env, at, count));
        v.push(case(format!("submit-bad-ptr/{row}"), format!("SUBMIT of {does}"), expect, run));
    }
    v.extend([
        story(
            "submit-partial-fault",
            "SUBMIT of 40 entries whose last 8 lie in a PROT_NONE page: EFAULT with nothing queued, or success with \
             32 submitted",
            Expect::Ok,
            partial_fault,
        ),
        story(
            "submit-concurrent",
            "4 threads SUBMIT 1600 NOPs with distinct user_data concurrently (retrying what does not fit) while the \
             main thread reaps: every entry completes OK exactly once",
            Expect::Ok,
            concurrent,
        ),
        story(
            "submit-huge-count",
            "SUBMIT with count 2^32-1 over 1024 valid NOPs followed by a PROT_NONE page: success with 256..=768 \
             submitted (as many as fit); exactly those complete",
            Expect::Ok,
            huge_count,
        ),
    ]);
    v
}

fn bad_pointer(env: &Env, at: At, count: u32) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = map_ring(fd)?;
    let none = Anon::new(PAGE);
    want_ok("mprotect", mprotect(none.addr(0), PAGE, libc::PROT_NONE))?;
    let addr = match at {
        At::Addr(a) => a,
        At::ProtNone => none.addr(0),
    };
    let r = submit(fd, addr, count);
    ensure!(r.is_err() || r == Ok(0), "{} entries submitted from {addr:#x}", raw::show(&r));
    ensure!(ring.get(SQ_TAIL) == 0, "{} entries queued by the SUBMIT", ring.get(SQ_TAIL));
    ring.stays_quiet(100)?;
    Ok(Got::call(&r, "nothing queued"))
}

/// Writes NOPs with user_data `1..=n` as an array of raw entries at `at`.
fn write_nops(at: *mut u8, n: usize) {
    for i in 0..n {
        let e = sqe_words(nop().user_data(i as u64 + 1).as_raw());
        // SAFETY: the caller's memory has room for `n` entries at `at`.
        unsafe { std::ptr::write_unaligned(at.add(i * 64).cast::<[u64; 8]>(), e) };
    }
}

fn partial_fault(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = map_ring(fd)?;
    let two = Anon::new(2 * PAGE);
    want_ok("mprotect", mprotect(two.addr(PAGE), PAGE, libc::PROT_NONE))?;
    let first = PAGE - 32 * 64;
    // The first 32 entries fill the end of the read/write page.
    // SAFETY: offset `first` is inside `two`, with 32 entries' room.
    write_nops(unsafe { two.ptr().add(first) }, 32);
    let r = submit(fd, two.addr(first), 40);
    let queued = ring.get(SQ_TAIL);
    ring.kick()?;
    for _ in 0..queued {
        ring.reap(Duration::from_secs(10))?;
    }
    match r {
        Err(Errno(libc::EFAULT)) if queued == 0 => Ok(Got::ok("EFAULT, nothing queued")),
        Ok(32) if queued == 32 => Ok(Got::ok("32 submitted, the 32 completed")),
        _ => Err(format!(
            "{} with {queued} entries queued (sq_tail moved) and completed afterwards: the caller is told the call \
             failed (and is not told how many went in) while {queued} commands run",
            raw::show(&r)
        )),
    }
}

fn concurrent(env: &Env) -> Result<Got, String> {
    const THREADS: u64 = 4;
    const BATCHES: u64 = 50;
    const PER: u64 = 8;
    let total = THREADS * BATCHES * PER;
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = map_ring(fd)?;
    let failed = Mutex::new(None::<String>);
    let mut seen = vec![false; total as usize];
    let partial = AtomicUsize::new(0);
    std::thread::scope(|s| -> Result<(), String> {
        for t in 0..THREADS {
            let (failed, partial) = (&failed, &partial);
            s.spawn(move || {
                for b in 0..BATCHES {
                    let batch: Vec<_> =
                        (0..PER).map(|k| *nop().user_data((t * BATCHES + b) * PER + k + 1).as_raw()).collect();
                    let mut done = 0;
                    let start = Instant::now();
                    while done < batch.len() {
                        if start.elapsed() > Duration::from_secs(30) {
                            *failed.lock().unwrap() = Some("a SUBMIT made no progress for 30 s".into());
                            return;
                        }
                        match submit(fd, batch[done..].as_ptr() as u64, (batch.len() - done) as u32) {
                            Ok(n) => {
                                if (n as usize) < batch.len() - done {
                                    partial.fetch_add(1, Ordering::Relaxed);
                                    std::thread::yield_now();
                                }
                                done += n as usize;
                            }
                            Err(e) => {
                                *failed.lock().unwrap() = Some(format!("SUBMIT: {e}"));
                                return;
                            }
                        }
                    }
                }
            });
        }
        for _ in 0..total {
            let c = ring.reap(Duration::from_secs(30))?;
            let i = c.user_data.wrapping_sub(1) as usize;
            let again = seen.get(i).copied().unwrap_or(false);
            ensure!(
                c.status == WARPQ_STATUS_OK && i < seen.len() && !again,
                "completion {:#x}: {} (seen before: {again})",
                c.user_data,
                st(c.status)
            );
            seen[i] = true;
        }
        Ok(())
    })?;
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e);
    }
    ring.stays_quiet(100)?;
    let partial = partial.load(Ordering::Relaxed);
    Ok(Got::ok(format!("{total} NOPs from {THREADS} threads completed exactly once ({partial} short SUBMITs retried)")))
}

fn huge_count(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = map_ring(fd)?;
    let n = 1024;
    let mem = Anon::new(n * 64 + PAGE);
    write_nops(mem.ptr(), n);
    want_ok("mprotect", mprotect(mem.addr(n * 64), PAGE, libc::PROT_NONE))?;
    let r = submit(fd, mem.addr(0), u32::MAX);
    let submitted = match r {
        Ok(k) if (WARPQ_SQ_ENTRIES..=WARPQ_SQ_ENTRIES + WARPQ_CQ_ENTRIES).contains(&k) => k,
        other => return Err(format!("SUBMIT of 2^32-1 entries: {}", raw::show(&other))),
    };
    ring.kick()?;
    for i in 0..submitted {
        let c = ring.reap(Duration::from_secs(10))?;
        let ok = c.user_data == u64::from(i) + 1 && c.status == WARPQ_STATUS_OK;
        ensure!(ok, "completion {i}: {:#x} {}", c.user_data, st(c.status));
    }
    ring.stays_quiet(100)?;
    Ok(Got::ok(format!("{submitted} submitted (as many as fit), exactly those completed")))
}
