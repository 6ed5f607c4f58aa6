//! B7: starvation. One process registers 64 MiB and streams 4 KiB FILLs
//! over both halves of it (16 in flight per half, one thread driving one
//! queue), while a second thread `MADV_DONTNEED`s one page of the first
//! half every 5 ms: each drop tears down that page's chunk (`chunk_kb`,
//! read from the module and printed), and the next FILL there waits for
//! its rebuild.
//!
//! Three sides per round, interleaved, the same process shape each time:
//!
//! - **undisturbed**: the second thread drops a page of an unregistered
//!   64 MiB buffer of the same shape instead (same system calls, no
//!   invalidation of registered memory); FILLs marked `UNORDERED`;
//! - **disturbed, UNORDERED**: FILLs marked `WARPQ_SQE_UNORDERED`, so a
//!   FILL on another chunk overtakes one that waits for its rebuild;
//! - **disturbed, in order**: the same without the flag (a waiting FILL
//!   holds up the whole queue).
//!
//! The thread submits through the mapped ring and sleeps in poll(2) when
//! nothing has completed. Streams never write the dropped pages (page 0 of
//! each 2 MiB slice); every
//! completion is checked: status OK and all 4096 bytes of its page hold
//! its value. Figures: the second half's throughput against undisturbed
//! (target ≥ 0.9, with UNORDERED) and the first half's completions per 5 ms
//! period (target ≥ 1).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warpq::{opcode, Access, Buffer, Device, Queue, Status};

use super::report::{Report, Target};
use super::{set_backing, spread, PAGE};

const REGION: usize = 64 << 20;
/// The streams' layout: each half is cut into 2 MiB slices; the other
/// thread drops page 0 of one first-half slice after another, and the
/// streams cycle through the other pages of every slice. With chunks of
/// 2 MiB or less, page 0 of a slice is in a chunk of its own slice.
const SLICE: usize = 2 << 20;
const SLICES_PER_HALF: usize = REGION / 2 / SLICE;
const ROUNDS: usize = 5;
const SIDE: Duration = Duration::from_secs(6);
const PERIOD: Duration = Duration::from_millis(5);
const WINDOW: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Undisturbed,
    Unordered,
    InOrder,
}

impl Side {
    const ALL: [Side; 3] = [Side::Undisturbed, Side::Unordered, Side::InOrder];

    fn name(self) -> &'static str {
        match self {
            Side::Undisturbed => "undisturbed",
            Side::Unordered => "disturbed, UNORDERED",
            Side::InOrder => "disturbed, in order",
        }
    }
}

/// What one side of a round did: completions per half, and pages dropped.
struct Outcome {
    done: [u64; 2],
    drops: u64,
    secs: f64,
}

/// The page of the `n`-th command of half `half` (never page 0 of a slice,
/// the one the other thread drops), as an offset in the region.
fn page_of(half: usize, n: u64) -> usize {
    let per_slice = SLICE / PAGE - 1;
    let i = (n as usize) % (SLICES_PER_HALF * per_slice);
    let (slice, page) = (i % SLICES_PER_HALF, 1 + i / SLICES_PER_HALF);
    half * (REGION / 2) + slice * SLICE + page * PAGE
}

/// One side: streams on both halves for [`SIDE`] while the other thread
/// drops a page every [`PERIOD`] (of the registered buffer or of `decoy`).
fn side(q: &mut Queue<'_>, base: u64, decoy: u64, side: Side) -> Result<Outcome, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let drops = Arc::new(AtomicU64::new(0));
    let target = if side == Side::Undisturbed { decoy } else { base };
    let dropper = {
        let (stop, drops) = (stop.clone(), drops.clone());
        std::thread::spawn(move || {
            let mut next = Instant::now();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let at = target as usize + (n % SLICES_PER_HALF) * SLICE;
                // SAFETY: page 0 of a slice of the first half of a mapping
                // this process owns for the whole benchmark; no stream
                // command or check touches page 0 of any slice.
                unsafe { libc::madvise(at as *mut libc::c_void, PAGE, libc::MADV_DONTNEED) };
                drops.fetch_add(1, Ordering::Relaxed);
                n += 1;
                next += PERIOD;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        })
    };
    let result = stream(q, base, side);
    stop.store(true, Ordering::Relaxed);
    let _ = dropper.join();
    let (done, secs) = result?;
    Ok(Outcome { done, drops: drops.load(Ordering::Relaxed), secs })
}

/// The two streams for [`SIDE`]; completions per half counted until then,
/// the rest drained (and checked) after.
fn stream(q: &mut Queue<'_>, base: u64, side: Side) -> Result<([u64; 2], f64), String> {
    let mut in_flight = [0usize; 2];
    let mut issued = [0u64; 2];
    let mut done = [0u64; 2];
    let mut pending: HashMap<u64, (usize, usize, u8)> = HashMap::new();
    let mut tag = 0u64;
    let t0 = Instant::now();
    let mut counted_until = None;
    loop {
        let timing = t0.elapsed() < SIDE;
        if !timing && counted_until.is_none() {
            counted_until = Some(t0.elapsed().as_secs_f64());
        }
        if timing {
            for half in 0..2 {
                while in_flight[half] < WINDOW {
                    let off = page_of(half, issued[half]);
                    let value = (tag % 251) as u8 + 1;
                    let e = opcode::Fill::new(base + off as u64, PAGE as u64, value).build().user_data(tag);
                    let e = if side == Side::InOrder { e } else { e.unordered() };
                    if q.submission().push(&e).is_err() {
                        break;
                    }
                    pending.insert(tag, (half, off, value));
                    in_flight[half] += 1;
                    issued[half] += 1;
                    tag += 1;
                }
            }
            q.submit().map_err(|e| format!("submit: {e}"))?;
        } else if pending.is_empty() {
            break;
        } else if t0.elapsed() > SIDE + Duration::from_secs(60) {
            let queues = std::fs::read_to_string("/sys/kernel/debug/warpq/warpq0/queues").unwrap_or_default();
            let mut left: Vec<_> =
                pending.values().map(|&(half, off, _)| (half, off / SLICE, off % SLICE / PAGE)).collect();
            left.sort();
            return Err(format!(
                "{} commands still in flight 60 s after the side ended (half, slice, page): {left:?}\n{queues}",
                pending.len()
            ));
        }
        let mut any = false;
        for c in q.completion() {
            any = true;
            let (half, off, value) =
                pending.remove(&c.user_data()).ok_or_else(|| format!("unknown completion {}", c.user_data()))?;
            if c.status() != Status::Ok {
                return Err(format!("FILL at +{off:#x} completed {:?}", c.status()));
            }
            // SAFETY: a page of the registered buffer that no command in
            // flight writes (the streams cycle through 8176 pages per half,
            // 16 at a time) and the other thread never drops.
            let page = unsafe { std::slice::from_raw_parts((base as usize + off) as *const u8, PAGE) };
            if let Some(bad) = page.iter().position(|&b| b != value) {
                return Err(format!("FILL at +{off:#x}: byte {bad} is {:#x}, not {value:#x}", page[bad]));
            }
            in_flight[half] -= 1;
            if timing {
                done[half] += 1;
            }
        }
        if !any {
            // Sleep in poll(2) until completions are ready, as an event
            // loop would (WAIT would rebuild inline, and a spinning client
            // would take the CPU the engine and the rebuild worker need).
            q.poll_completions(Some(Duration::from_millis(2))).map_err(|e| format!("poll: {e}"))?;
        }
    }
    Ok((done, counted_until.unwrap_or(SIDE.as_secs_f64())))
}

pub(super) fn b7(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B7 starvation: one page of the first half dropped every 5 ms, streams on both halves\n");
    let chunk_kb: u64 = std::fs::read_to_string("/sys/module/warpq/parameters/chunk_kb")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    r.line(format!(
        "64 MiB registered ({} chunks of {chunk_kb} KiB, `chunk_kb`). One thread drives one queue: 4 KiB FILLs, {WINDOW} in flight on each \
         half, every completion checked (status and all 4096 bytes). A second thread calls MADV_DONTNEED on page 0 \
         of one first-half 2 MiB slice every 5 ms, tearing down the chunk that holds it (undisturbed: of an \
         unregistered 64 MiB buffer instead, same calls). {ROUNDS} interleaved rounds of {} s per side. Commands \
         per second per half, median of the rounds and their spread.\n",
        (REGION as u64).div_ceil(chunk_kb.max(1) << 10),
        SIDE.as_secs()
    ));
    r.line("| backing | side | first half cmd/s | second half cmd/s | first-half completions per 5 ms | drops |");
    r.line("|---|---|---|---|---|---|");
    for backing in ["pin", "mirror"] {
        set_backing(backing);
        let dev = Device::open(path).map_err(|e| e.to_string())?;
        let mut q = dev.queue().map_err(|e| e.to_string())?;
        let mut buf = Buffer::new(REGION).map_err(|e| e.to_string())?;
        buf.fill(0);
        let b = dev.register_buffer(buf, Access::ReadWrite).map_err(|e| e.to_string())?;
        let mut decoy = Buffer::new(REGION).map_err(|e| e.to_string())?;
        decoy.fill(0);
        let mut per_side: Vec<Vec<([f64; 2], f64, u64)>> = vec![Vec::new(); Side::ALL.len()];
        for round in 0..ROUNDS {
            for (i, s) in Side::ALL.iter().enumerate() {
                let o =
                    side(&mut q, b.addr(), decoy.addr(), *s).map_err(|e| format!("{backing}, {}: {e}", s.name()))?;
                let rate = [o.done[0] as f64 / o.secs, o.done[1] as f64 / o.secs];
                let periods = o.secs / PERIOD.as_secs_f64();
                per_side[i].push((rate, o.done[0] as f64 / periods, o.drops));
                let _ = round;
            }
        }
        for (i, s) in Side::ALL.iter().enumerate() {
            let first: Vec<f64> = per_side[i].iter().map(|x| x.0[0]).collect();
            let second: Vec<f64> = per_side[i].iter().map(|x| x.0[1]).collect();
            let per_period: Vec<f64> = per_side[i].iter().map(|x| x.1).collect();
            let drops: u64 = per_side[i].iter().map(|x| x.2).sum();
            let ((f, flo, fhi), (sc, slo, shi), (p, plo, phi)) = (spread(&first), spread(&second), spread(&per_period));
            r.line(format!(
                "| {backing} | {} | {f:.0} ({flo:.0}..{fhi:.0}) | {sc:.0} ({slo:.0}..{shi:.0}) | {p:.2} ({plo:.2}..{phi:.2}) | {drops} |",
                s.name()
            ));
        }
        // Per round: disturbed second half / undisturbed second half.
        let ratio = |side: usize| {
            let v: Vec<f64> = (0..ROUNDS).map(|k| per_side[side][k].0[1] / per_side[0][k].0[1].max(1.0)).collect();
            spread(&v)
        };
        let (u, ulo, uhi) = ratio(1);
        let (o, olo, ohi) = ratio(2);
        let (p, plo, phi) = spread(&per_side[1].iter().map(|x| x.1).collect::<Vec<_>>());
        r.figure(&format!("b7_{backing}_second_half_unordered_over_undisturbed"), u);
        r.figure(&format!("b7_{backing}_second_half_in_order_over_undisturbed"), o);
        r.figure(&format!("b7_{backing}_first_half_per_period"), p);
        let title = "B7 starvation: second half kept / first half progress";
        r.headline("b7", title, &format!("{backing}: second half, UNORDERED / undisturbed"), u, Target::AtLeast(0.9));
        r.headline("b7", title, &format!("{backing}: second half, in order / undisturbed"), o, Target::None);
        r.headline("b7", title, &format!("{backing}: first-half completions per 5 ms"), p, Target::AtLeast(1.0));
        r.line(format!(
            "\n{backing}: second half keeps {u:.2}x ({ulo:.2}..{uhi:.2}) of its undisturbed throughput with UNORDERED, \
             {o:.2}x ({olo:.2}..{ohi:.2}) in order; the first half completes {p:.2} ({plo:.2}..{phi:.2}) commands per \
             5 ms period (targets: ≥ 0.9, ≥ 1).\n"
        ));
        b.unregister().map_err(|e| e.to_string())?;
    }
    set_backing("pin");
    Ok(())
}
