//! B2: the cost of an invalidation, as munmap latency of a registered
//! buffer against the same buffer unregistered.

use std::time::Instant;

use warpq::sys::*;
use warpq::{Device, Queue};

use super::report::{log2_hist, Report, Target};
use super::{hist_of, hist_read, hist_reset, percentile, set_backing, spread, PAGE};
use crate::stream::{push_all, reap, sqe};
use crate::Anon;

/// munmap latencies (µs) of a 64-page buffer, registered or not, `n` times.
fn munmap_latencies(
    dev: &Device,
    q: &mut Queue<'_>,
    registered: bool,
    busy: bool,
    n: usize,
) -> Result<Vec<f64>, String> {
    let other = Anon::new(64 * PAGE);
    // SAFETY: raw pointers only.
    let ho = unsafe { dev.register_raw(other.ptr(), other.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
        .map_err(|e| e.to_string())?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let mut buf = Anon::new(64 * PAGE);
        buf.write(&vec![1u8; 64 * PAGE]);
        let handle = if registered {
            // SAFETY: raw pointers only; unmapped below on purpose.
            Some(
                unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        if busy {
            // Long commands in flight on the buffer about to go.
            let cmds: Vec<_> = (0..4).map(|k| sqe(WARPQ_OP_FILL, k, 0, buf.addr(0), (64 * PAGE) as u64, k)).collect();
            push_all(q, &cmds)?;
        }
        let t = Instant::now();
        buf.unmap();
        v.push(t.elapsed().as_secs_f64() * 1e6);
        if busy {
            for _ in 0..4 {
                reap(q)?;
            }
        }
        // The registration of an unmapped range is dead: drop it, so the
        // next buffer (often at the same address) can be registered.
        if let Some(h) = handle {
            dev.unregister(h).map_err(|e| e.to_string())?;
        }
    }
    dev.unregister(ho).map_err(|e| e.to_string())?;
    Ok(v)
}

const ROUNDS: usize = 5;
const SAMPLES: usize = 60;
const CASES: [(&str, bool, bool); 3] = [
    ("unregistered", false, false),
    ("registered, idle queue", true, false),
    ("registered, commands in flight", true, true),
];

pub(super) fn b2(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B2 invalidation: munmap of a 64-page buffer (µs)\n");
    r.line(format!(
        "Per backing, {ROUNDS} interleaved rounds of {SAMPLES} munmaps per case: a fresh 64-page buffer, filled, \
         registered read/write or not, then munmap timed in user space (with commands in flight: four 256 KiB FILLs \
         of it queued first). The driver maps each chunk as one scatter-gather table, so the teardown unmaps one \
         IOVA range. Ratios: per round, p99 registered / p99 unregistered; median of the rounds and their spread.\n"
    ));
    r.line("| backing | case | p50 | p99 | p99 / unregistered (rounds) |");
    r.line("|---|---|---|---|---|");
    for backing in ["pin", "mirror"] {
        set_backing(backing);
        let mut all = vec![Vec::new(); CASES.len()];
        let mut round_p99 = vec![Vec::new(); CASES.len()];
        let mut phases = Vec::new();
        for _ in 0..ROUNDS {
            for (i, (_, registered, busy)) in CASES.iter().enumerate() {
                let dev = Device::open(path).map_err(|e| e.to_string())?;
                let mut q = dev.queue().map_err(|e| e.to_string())?;
                hist_reset(path);
                let mut v = munmap_latencies(&dev, &mut q, *registered, *busy, SAMPLES)
                    .map_err(|e| format!("{backing}: {e}"))?;
                if *busy {
                    phases = hist_read(path);
                }
                round_p99[i].push(percentile(&mut v, 0.99));
                all[i].extend(v);
            }
        }
        let ratio = |i: usize| {
            let v: Vec<f64> = (0..ROUNDS).map(|k| round_p99[i][k] / round_p99[0][k]).collect();
            spread(&v)
        };
        for (i, (name, _, _)) in CASES.iter().enumerate() {
            let p50 = percentile(&mut all[i], 0.5);
            let p99 = percentile(&mut all[i], 0.99);
            let (m, lo, hi) = ratio(i);
            r.line(format!("| {backing} | {name} | {p50:.1} | {p99:.1} | {m:.2}x ({lo:.2}..{hi:.2}) |"));
            let k = name.replace([' ', ','], "_");
            r.figure(&format!("b2_{backing}_{k}_p50_us"), p50);
            r.figure(&format!("b2_{backing}_{k}_p99_us"), p99);
            r.hist(
                "b2_munmap_user",
                "B2 munmap of a 64-page buffer, timed in user space",
                &format!("{backing}: {name}"),
                "user",
                &log2_hist(&all[i]),
            );
        }
        for h in ["invalidate_ns", "drain_ns", "unmap_ns", "unpin_ns"] {
            r.hist(
                "b2_phases_in_flight_driver",
                "B2 with commands in flight (last round): the driver's phase histograms",
                &format!("{backing}: {h}"),
                "driver",
                &hist_of(&phases, h),
            );
        }
        let title = "B2 munmap p99, registered / unregistered";
        r.headline("b2", title, &format!("{backing}: idle queue"), ratio(1).0, Target::AtMost(2.0));
        r.headline("b2", title, &format!("{backing}: commands in flight"), ratio(2).0, Target::None);
    }
    set_backing("pin");
    r.line("\nTarget: p99 with an idle queue <= 2x the unregistered munmap, under both backings.\n");
    Ok(())
}
