//! B2: the cost of an invalidation, as munmap latency of a registered
//! buffer against the same buffer unregistered.

use std::time::Instant;

use warpq::sys::*;
use warpq::{Device, Queue};

use super::report::{log2_hist, Report, Target};
use super::{hist_of, hist_read, hist_reset, percentile, PAGE};
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

pub(super) fn b2(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B2 invalidation: munmap of a 64-page buffer (µs)\n");
    r.line("| case | p50 | p99 | p50 / unregistered | p99 / unregistered |");
    r.line("|---|---|---|---|---|");
    let mut results = Vec::new();
    for (name, registered, busy) in [
        ("unregistered", false, false),
        ("registered, idle queue", true, false),
        ("registered, commands in flight", true, true),
    ] {
        let dev = Device::open(path).map_err(|e| e.to_string())?;
        let mut q = dev.queue().map_err(|e| e.to_string())?;
        hist_reset(path);
        let mut all = munmap_latencies(&dev, &mut q, registered, busy, 200)?;
        let driver = hist_read(path);
        let p50 = percentile(&mut all, 0.5);
        let p99 = percentile(&mut all, 0.99);
        results.push((name, p50, p99));
        r.hist("b2_munmap_user", "B2 munmap of a 64-page buffer, timed in user space", name, "user", &log2_hist(&all));
        r.hist(
            "b2_invalidate_driver",
            "B2 the driver's invalidate_ns (callbacks that took the queue lock)",
            name,
            "driver",
            &hist_of(&driver, "invalidate_ns"),
        );
        if busy {
            for h in ["invalidate_ns", "drain_ns", "unmap_ns", "unpin_ns"] {
                r.hist(
                    "b2_phases_in_flight_driver",
                    "B2 with commands in flight: the driver's phase histograms",
                    h,
                    "driver",
                    &hist_of(&driver, h),
                );
            }
        }
    }
    let (_, base50, base99) = results[0];
    for (name, p50, p99) in &results {
        r.line(format!("| {name} | {p50:.1} | {p99:.1} | {:.2}x | {:.2}x |", p50 / base50, p99 / base99));
        let k = name.replace([' ', ','], "_");
        r.figure(&format!("b2_{k}_p50_us"), *p50);
        r.figure(&format!("b2_{k}_p99_us"), *p99);
    }
    let title = "B2 munmap p99, registered / unregistered";
    r.headline("b2", title, "idle queue", results[1].2 / base99, Target::AtMost(3.0));
    r.headline("b2", title, "commands in flight", results[2].2 / base99, Target::None);
    r.line("\nTarget: p99 with an idle queue <= 3x the unregistered munmap.\n");
    Ok(())
}
