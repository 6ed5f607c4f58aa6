//! B8: beyond the device's address window. Under `mirror`, one process
//! registers 1 GiB (16 buffers of 64 MiB, populated), four times what the
//! edu device can address at once (28 bits: 256 MiB), while its queue may
//! hold 64 MiB of device addresses (`device_share_mb`); a second process,
//! with its own queue and a 4 MiB buffer, runs 4 KiB FILLs one at a time
//! and checks each.
//!
//! Three sides per round, interleaved, the same two processes and the same
//! memory registered and populated each time:
//!
//! - **idle**: the first process does nothing;
//! - **within its share**: it streams verified 4 KiB FILLs, 8 at a time,
//!   to random pages of its first 64 MiB buffer (mapped by an untimed
//!   pass first: no eviction; the table shows the evictions per side);
//! - **across 1 GiB**: the same to random pages of all 1 GiB (nearly every
//!   command needs a chunk evicted and another mapped).
//!
//! Figures: the second process's commands per second and its longest gap
//! between two completions on each side; the first process's commands per
//! second and evictions. The headline: the second process's throughput
//! while the first streams across 1 GiB against while it streams within
//! its share (what going beyond the window costs the neighbour), and its
//! longest gap (it keeps completing: no stall).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use warpq::sysfs::Sysfs;
use warpq::{opcode, Access, Buffer, Device, Queue, Status};

use super::report::{Report, Target};
use super::{dev_name, set_backing, spread, PAGE};
use crate::harness;
use crate::rng::Rng;

const REGION: usize = 64 << 20;
const REGIONS: usize = 16;
const ROUNDS: usize = 5;
const SIDE: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Idle,
    WithinShare,
    Across,
}

impl Side {
    const ALL: [Side; 3] = [Side::Idle, Side::WithinShare, Side::Across];

    fn name(self) -> &'static str {
        match self {
            Side::Idle => "idle",
            Side::WithinShare => "within its share (64 MiB)",
            Side::Across => "across 1 GiB",
        }
    }
}

/// What the two processes share (a `MAP_SHARED` page).
#[repr(C)]
struct Shared {
    stop: AtomicU64,
    /// The second process's completed FILLs.
    done: AtomicU64,
    /// Its longest gap between two completions since the parent last
    /// zeroed it, in µs.
    gap_us: AtomicU64,
    /// Nonzero once it found a failed command or a wrong byte.
    failed: AtomicU64,
}

/// One side's figures.
struct Outcome {
    other_rate: f64,
    other_gap_ms: f64,
    stream_rate: f64,
    evictions: u64,
}

pub(super) fn b8(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B8 beyond the window: 1 GiB registered under mirror, a second process's queue meanwhile\n");
    r.line(format!(
        "One process registers 16 x 64 MiB = 1 GiB (populated) under mirror, 4x the edu device's 256 MiB window; its \
         queue may hold 64 MiB of device addresses (device_share_mb). A second process (own queue, 4 MiB buffer) \
         runs 4 KiB FILLs one at a time, each checked. Sides, interleaved, {ROUNDS} rounds of {} s: the first \
         process idle; streaming verified 4 KiB FILLs (8 at a time, random pages) within its first 64 MiB (no \
         eviction); the same across all 1 GiB. Median of the rounds and their spread.\n",
        SIDE.as_secs()
    ));
    set_backing("mirror");
    let result = run(path, r);
    set_backing("pin");
    result
}

fn run(path: &str, r: &mut Report) -> Result<(), String> {
    // SAFETY: a `Shared` of zeros is valid (atomics) and fits in a page.
    let shared: &'static Shared = unsafe { crate::mem::shared_zeroed() };
    let child = harness::spawn(|| match other_process(path, shared) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("B8: second process: {e}");
            shared.failed.store(1, Ordering::SeqCst);
            1
        }
    })
    .map_err(|e| format!("fork: {e}"))?;
    let result = stream_sides(path, shared);
    shared.stop.store(1, Ordering::SeqCst);
    let exit = child.wait(Duration::from_secs(60));
    let per_side = result?;
    if !exit.success() || shared.failed.load(Ordering::SeqCst) != 0 {
        return Err(format!("the second process failed ({exit:?})"));
    }
    r.line("| side | second process cmd/s | its longest gap (ms) | first process cmd/s | evictions/s |");
    r.line("|---|---|---|---|---|");
    for (i, s) in Side::ALL.iter().enumerate() {
        let col = |f: fn(&Outcome) -> f64| spread(&per_side[i].iter().map(f).collect::<Vec<_>>());
        let ((o, olo, ohi), (g, glo, ghi)) = (col(|x| x.other_rate), col(|x| x.other_gap_ms));
        let ((st, stlo, sthi), (e, elo, ehi)) =
            (col(|x| x.stream_rate), col(|x| x.evictions as f64 / SIDE.as_secs_f64()));
        r.line(format!(
            "| {} | {o:.0} ({olo:.0}..{ohi:.0}) | {g:.1} ({glo:.1}..{ghi:.1}) | {st:.0} ({stlo:.0}..{sthi:.0}) | \
             {e:.0} ({elo:.0}..{ehi:.0}) |",
            s.name()
        ));
    }
    // Per round: across / within, for the second process and the first.
    let ratio = |f: fn(&Outcome) -> f64| {
        let v: Vec<f64> = (0..ROUNDS).map(|k| f(&per_side[2][k]) / f(&per_side[1][k]).max(1e-9)).collect();
        spread(&v)
    };
    let (kept, klo, khi) = ratio(|x| x.other_rate);
    let (own, wlo, whi) = ratio(|x| x.stream_rate);
    let (gap, gap_lo, gap_hi) = spread(&per_side[2].iter().map(|x| x.other_gap_ms).collect::<Vec<_>>());
    let (evict, _, _) =
        spread(&per_side[2].iter().map(|x| x.evictions as f64 / SIDE.as_secs_f64()).collect::<Vec<_>>());
    r.figure("b8_other_across_over_within", kept);
    r.figure("b8_stream_across_over_within", own);
    r.figure("b8_other_longest_gap_ms_across", gap);
    r.figure("b8_evictions_per_s_across", evict);
    let title = "B8 beyond the window (mirror, 1 GiB registered)";
    r.headline("b8", title, "second process cmd/s, first across 1 GiB / within its share", kept, Target::AtLeast(0.8));
    r.headline("b8", title, "first process cmd/s, across 1 GiB / within its share", own, Target::None);
    r.headline(
        "b8",
        title,
        "second process's longest gap between completions (ms), first across 1 GiB",
        gap,
        Target::AtMost(100.0),
    );
    r.line(format!(
        "\nWhile the first process streams across 1 GiB ({evict:.0} evictions/s), the second keeps {kept:.2}x \
         ({klo:.2}..{khi:.2}) of its throughput with the first streaming within its share, and its longest gap \
         between completions is {gap:.1} ms ({gap_lo:.1}..{gap_hi:.1}); the first process itself runs at {own:.2}x \
         ({wlo:.2}..{whi:.2}) of its within-share rate (targets: ≥ 0.8, ≤ 100 ms).\n"
    ));
    Ok(())
}

/// The first process: registers 1 GiB, then runs the sides; per side, the
/// figures of each round.
fn stream_sides(path: &str, shared: &Shared) -> Result<Vec<Vec<Outcome>>, String> {
    let dev = Device::open(path).map_err(|e| e.to_string())?;
    let mut q = dev.queue().map_err(|e| e.to_string())?;
    let mut regs = Vec::with_capacity(REGIONS);
    for i in 0..REGIONS {
        let mut buf = Buffer::new(REGION).map_err(|e| e.to_string())?;
        buf.fill(0);
        regs.push(dev.register_buffer(buf, Access::ReadWrite).map_err(|e| format!("register buffer {i}: {e}"))?);
    }
    let bases: Vec<u64> = regs.iter().map(|b| b.addr()).collect();
    let mut per_side: Vec<Vec<Outcome>> = (0..Side::ALL.len()).map(|_| Vec::new()).collect();
    let mut rng = Rng(0x0b08_0b08);
    for _ in 0..ROUNDS {
        for (i, s) in Side::ALL.iter().enumerate() {
            if *s == Side::WithinShare {
                // Untimed: map the first buffer's chunks again (REGISTER and
                // the previous round's across side evicted them).
                warm(&mut q, bases[0])?;
            }
            let evictions0 = evictions(path)?;
            let done0 = shared.done.load(Ordering::SeqCst);
            shared.gap_us.store(0, Ordering::SeqCst);
            let t0 = Instant::now();
            let streamed = match s {
                Side::Idle => {
                    std::thread::sleep(SIDE);
                    0
                }
                Side::WithinShare => stream(&mut q, &bases[..1], &mut rng)?,
                Side::Across => stream(&mut q, &bases, &mut rng)?,
            };
            let secs = t0.elapsed().as_secs_f64();
            per_side[i].push(Outcome {
                other_rate: (shared.done.load(Ordering::SeqCst) - done0) as f64 / secs,
                other_gap_ms: shared.gap_us.load(Ordering::SeqCst) as f64 / 1000.0,
                stream_rate: streamed as f64 / secs,
                evictions: evictions(path)? - evictions0,
            });
        }
    }
    for b in regs {
        b.unregister().map_err(|e| e.to_string())?;
    }
    Ok(per_side)
}

/// Streams for [`SIDE`]: batches of 8 FILLs of a random page of one of the
/// buffers at `bases` (distinct pages per batch), each completion checked
/// (status, and all of its page). Returns the commands completed.
fn stream(q: &mut Queue<'_>, bases: &[u64], rng: &mut Rng) -> Result<u64, String> {
    let pages = (bases.len() * REGION / PAGE) as u64;
    let page_addr = |p: u64| bases[(p as usize * PAGE) / REGION] + (p as usize * PAGE % REGION) as u64;
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < SIDE {
        let mut batch: Vec<(u64, u8)> = Vec::with_capacity(8);
        while batch.len() < 8 {
            let p = rng.below(pages);
            if batch.iter().all(|&(q, _)| q != p) {
                batch.push((p, (rng.below(255) + 1) as u8));
            }
        }
        for (i, &(p, value)) in batch.iter().enumerate() {
            let e = opcode::Fill::new(page_addr(p), PAGE as u64, value).build().user_data(i as u64);
            q.submission().push(&e).map_err(|e| format!("push: {e}"))?;
        }
        let mut got = 0;
        while got < batch.len() {
            q.submit_and_wait(1).map_err(|e| format!("submit_and_wait: {e}"))?;
            for c in q.completion() {
                let (p, value) = batch[c.user_data() as usize];
                if c.status() != Status::Ok {
                    return Err(format!("FILL of page {p} completed {:?}", c.status()));
                }
                // SAFETY: a page of a registered buffer; its FILL completed
                // and no other command in flight writes it.
                let bytes = unsafe { std::slice::from_raw_parts(page_addr(p) as *const u8, PAGE) };
                if bytes.iter().any(|&b| b != value) {
                    return Err(format!("FILL of page {p}: not all {value:#x}"));
                }
                got += 1;
            }
        }
        done += 8;
    }
    Ok(done)
}

/// One FILL into each chunk (`chunk_kb`) of the buffer at `base`, so that
/// all of it is mapped.
fn warm(q: &mut Queue<'_>, base: u64) -> Result<(), String> {
    let chunk_bytes = crate::param::chunk_bytes()? as u64;
    for chunk in 0..REGION as u64 / chunk_bytes {
        let e = opcode::Fill::new(base + chunk * chunk_bytes, PAGE as u64, 0x5a).build().user_data(chunk);
        q.submission().push(&e).map_err(|e| format!("push: {e}"))?;
        let ready = q.submit_and_wait(1).map_err(|e| format!("submit_and_wait: {e}"))?;
        let Some(c) = q.completion().next() else {
            return Err(format!(
                "no completion after submit_and_wait(1) warming chunk {chunk} (it said {ready} ready; {} in flight)",
                q.in_flight()
            ));
        };
        if c.status() != Status::Ok {
            return Err(format!("warming chunk {chunk}: {:?}", c.status()));
        }
    }
    Ok(())
}

/// The evictions of this process's queue (debugfs queue line).
fn evictions(path: &str) -> Result<u64, String> {
    let me = std::process::id() as i32;
    let queues = Sysfs::system().queues(dev_name(path)).map_err(|e| format!("queues: {e}"))?;
    queues
        .iter()
        .find(|q| q.pid == me)
        .and_then(|q| q.number("evictions"))
        .ok_or_else(|| "no evictions figure for our queue in the queues file".to_string())
}

/// The second process: its own queue and a 4 MiB buffer; one checked 4 KiB
/// FILL at a time until told to stop.
fn other_process(path: &str, shared: &Shared) -> Result<(), String> {
    let dev = Device::open(path).map_err(|e| format!("open: {e}"))?;
    let mut q = dev.queue().map_err(|e| format!("queue: {e}"))?;
    let mut buf = Buffer::new(4 << 20).map_err(|e| e.to_string())?;
    buf.fill(0);
    let b = dev.register_buffer(buf, Access::ReadWrite).map_err(|e| format!("register: {e}"))?;
    let pages = (4 << 20) / PAGE;
    let mut last = Instant::now();
    let mut n = 0u64;
    while shared.stop.load(Ordering::SeqCst) == 0 {
        let page = (n as usize * 7) % pages;
        let value = (n % 255 + 1) as u8;
        let addr = b.addr() + (page * PAGE) as u64;
        let e = opcode::Fill::new(addr, PAGE as u64, value).build().user_data(n);
        q.submission().push(&e).map_err(|e| format!("push: {e}"))?;
        let ready = q.submit_and_wait(1).map_err(|e| format!("submit_and_wait: {e}"))?;
        let Some(c) = q.completion().next() else {
            let h = q.header();
            return Err(format!(
                "no completion after submit_and_wait(1) of FILL {n} (it said {ready} ready; {} in flight; the \
                 ring's sq_head {} sq_tail {} cq_head {} cq_tail {})",
                q.in_flight(),
                h.sq_head,
                h.sq_tail,
                h.cq_head,
                h.cq_tail
            ));
        };
        if c.status() != Status::Ok {
            return Err(format!("FILL {n} completed {:?}", c.status()));
        }
        // SAFETY: a page of the registered buffer; its FILL completed.
        let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, PAGE) };
        if bytes.iter().any(|&x| x != value) {
            return Err(format!("FILL {n}: page {page} not all {value:#x}"));
        }
        let now = Instant::now();
        shared.gap_us.fetch_max(now.duration_since(last).as_micros() as u64, Ordering::SeqCst);
        last = now;
        shared.done.fetch_add(1, Ordering::SeqCst);
        n += 1;
    }
    Ok(())
}
