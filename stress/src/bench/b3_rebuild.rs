//! B3: the rebuild, as the first command after a 4 KiB invalidation, on a
//! 2 MiB region against a 64 MiB one (chunked rebuild: the cost must not
//! grow with the region), and both against the steady state.
//!
//! Each sample: `MADV_DONTNEED` of page 1 of the registered buffer (a CLEAR
//! that tears its chunk down), then a 4 KiB FILL of that page, timed from
//! submission to completion (it waits for the rebuild of that chunk). Both
//! sizes are measured in [`ROUNDS`] interleaved rounds in fresh queues; a
//! round's ratio is its 64 MiB p50 over its 2 MiB p50, and the headline is
//! the median of the rounds' ratios.
//!
//! The protocol's cost around the pin and the DMA map: the driver times,
//! inside each of those rebuilds, its `pin_user_pages` (or
//! `hmm_range_fault`) and its DMA map of the chunk's pages (`pin_ns`,
//! `map_ns`), and the whole rebuild (`rebuild_ns`: notifier sequence,
//! locks, drain, publish, reopening the queue). The device's histograms are
//! reset after the REGISTER and the steady samples, so their sums cover
//! exactly the rebuilds after the invalidations; a round's overhead is
//! the mean rebuild over the mean pin plus the mean DMA map of a chunk
//! (each histogram's sum over its count), the same pages in the same boot,
//! and the headline is the median over the rounds (64 MiB region).

use std::collections::BTreeMap;

use warpq::sys::*;
use warpq::sysfs::Histogram;
use warpq::Device;

use super::report::{Report, Target};
use super::{fill_round_trip, hist_of, hist_read, hist_reset, hist_sums, percentile, PAGE};
use crate::Anon;

const ROUNDS: usize = 5;
const SAMPLES: usize = 12;
const SIZES: [(&str, usize); 2] = [("2 MiB", 2 << 20), ("64 MiB", 64 << 20)];

/// What one size gave in one round: steady and after-invalidation
/// samples, and the driver's histogram sums over the after-invalidation
/// rebuilds only.
struct Samples {
    steady: Vec<f64>,
    after: Vec<f64>,
    sums: BTreeMap<String, u64>,
    hists: Vec<Histogram>,
}

/// One round's [`Samples`] for one buffer size.
fn samples(path: &str, len: usize) -> Result<Samples, String> {
    let dev = Device::open(path).map_err(|e| e.to_string())?;
    let mut q = dev.queue().map_err(|e| e.to_string())?;
    let buf = Anon::new(len);
    buf.write(&vec![5u8; len]);
    // SAFETY: raw pointers only; unregistered below.
    let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
        .map_err(|e| e.to_string())?;
    let target = buf.addr(PAGE);
    let steady: Vec<f64> = (0..SAMPLES).map(|_| fill_round_trip(&mut q, target)).collect::<Result<_, _>>()?;
    // From here on, the driver's histograms hold only these rebuilds.
    hist_reset(path);
    let mut after = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        // SAFETY: advice on our own mapping.
        unsafe { libc::madvise(buf.ptr().add(PAGE).cast(), PAGE, libc::MADV_DONTNEED) };
        after.push(fill_round_trip(&mut q, target)?);
    }
    let (sums, hists) = (hist_sums(path), hist_read(path));
    dev.unregister(h).map_err(|e| e.to_string())?;
    Ok(Samples { steady, after, sums, hists })
}

/// One round's mean rebuild and mean pin + DMA map of a chunk (µs, each
/// its histogram's sum over its sample count), and their ratio.
fn overhead(s: &Samples) -> Result<(f64, f64, f64), String> {
    let mean_us = |name: &str| -> Result<f64, String> {
        let n = s.hists.iter().find(|h| h.name == name).map_or(0, Histogram::total);
        let sum = s.sums.get(name).copied().unwrap_or(0);
        // One rebuild per invalidation, give or take a collision: more
        // means the reset after REGISTER did not take.
        if n == 0 || n > 2 * SAMPLES as u64 {
            return Err(format!("{name}: {n} samples after {SAMPLES} invalidations (was the reset refused?)"));
        }
        Ok(sum as f64 / n as f64 / 1000.0)
    };
    let rebuild = mean_us("rebuild_ns")?;
    let pin_map = mean_us("pin_ns")? + mean_us("map_ns")?;
    Ok((rebuild / pin_map, rebuild, pin_map))
}

pub(super) fn b3(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B3 rebuild: first 4 KiB command after a 4 KiB invalidation, 2 MiB vs 64 MiB region (µs)\n");
    r.line(format!(
        "{ROUNDS} interleaved rounds of {SAMPLES} samples per size. A sample: MADV_DONTNEED of page 1 of the \
         registered buffer, then a FILL of that page (it waits for the rebuild of its chunk). Steady: the same \
         FILL with nothing invalidated.\n"
    ));
    let mut steady = vec![Vec::new(); SIZES.len()];
    let mut after = vec![Vec::new(); SIZES.len()];
    let mut round_p50 = vec![Vec::new(); SIZES.len()];
    let mut round_overhead = vec![Vec::new(); SIZES.len()];
    let mut means = vec![(0.0, 0.0); SIZES.len()];
    for round in 0..ROUNDS {
        for (i, (name, len)) in SIZES.iter().enumerate() {
            let mut got = samples(path, *len)?;
            let (ratio, rebuild_us, pin_map_us) = overhead(&got).map_err(|e| format!("{name}: {e}"))?;
            let driver = std::mem::take(&mut got.hists);
            round_p50[i].push(percentile(&mut got.after, 0.5));
            steady[i].extend(got.steady);
            after[i].extend(got.after);
            round_overhead[i].push(ratio);
            means[i].0 += rebuild_us / ROUNDS as f64;
            means[i].1 += pin_map_us / ROUNDS as f64;
            // The driver's rebuild histogram of the last round, per size.
            if round == ROUNDS - 1 {
                let title = "B3 the driver's rebuild_ns after a 4 KiB invalidation";
                r.hist("b3_rebuild_driver", title, name, "driver", &hist_of(&driver, "rebuild_ns"));
            }
        }
    }
    r.line("| region | steady p50 | after invalidation p50 | p99 | after / steady |");
    r.line("|---|---|---|---|---|");
    for (i, (name, _)) in SIZES.iter().enumerate() {
        let s50 = percentile(&mut steady[i], 0.5);
        let a50 = percentile(&mut after[i], 0.5);
        let a99 = percentile(&mut after[i], 0.99);
        r.line(format!("| {name} | {s50:.0} | {a50:.0} | {a99:.0} | {:.1}x |", a50 / s50));
        let key = name.replace(' ', "").to_ascii_lowercase();
        r.figure(&format!("b3_{key}_steady_p50_us"), s50);
        r.figure(&format!("b3_{key}_after_invalidation_p50_us"), a50);
    }
    let mut ratios: Vec<f64> = (0..ROUNDS).map(|k| round_p50[1][k] / round_p50[0][k]).collect();
    let median = percentile(&mut ratios, 0.5);
    let (lo, hi) = (ratios[0], ratios[ratios.len() - 1]);
    r.figure("b3_64mib_over_2mib", median);
    r.figure("b3_64mib_over_2mib_min", lo);
    r.figure("b3_64mib_over_2mib_max", hi);
    r.headline(
        "b3",
        "B3 first command after a 4 KiB invalidation: 64 MiB region / 2 MiB region",
        "p50",
        median,
        Target::AtMost(1.5),
    );
    r.line(format!(
        "\n64 MiB / 2 MiB, median of the rounds' p50 ratios: {median:.2}x (rounds {lo:.2}..{hi:.2}); target <= 1.5x. \
         The per-phase costs (pin_ns, map_ns, rebuild_ns, unmap_ns, unpin_ns) are in `warpqctl hist` after the run.\n"
    ));
    r.line("\n### B3 the rebuild against the pin and DMA map of the same chunk (driver-timed, same rebuilds)\n");
    r.line(
        "Both sides are timed by the driver inside the same rebuilds after the invalidations above: the whole \
         rebuild (`rebuild_ns`) against its pin (`pin_user_pages`, or `hmm_range_fault` under `mirror`) plus DMA \
         map of the chunk's pages (`pin_ns + map_ns`). The ratio is what the protocol adds: notifier sequence, \
         locks, drain, publish, reopening the queue.\n",
    );
    r.line("| region | rebuild, mean µs | pin + map, mean µs | rebuild / (pin + map), median of rounds | rounds |");
    r.line("|---|---|---|---|---|");
    let mut headline = 0.0;
    for (i, (name, _)) in SIZES.iter().enumerate() {
        let mut ratios = round_overhead[i].clone();
        let median = percentile(&mut ratios, 0.5);
        let (lo, hi) = (ratios[0], ratios[ratios.len() - 1]);
        r.line(format!("| {name} | {:.0} | {:.0} | {median:.2}x | {lo:.2}..{hi:.2} |", means[i].0, means[i].1));
        let key = name.replace(' ', "").to_ascii_lowercase();
        r.figure(&format!("b3_{key}_rebuild_over_pin_map"), median);
        r.figure(&format!("b3_{key}_rebuild_over_pin_map_min"), lo);
        r.figure(&format!("b3_{key}_rebuild_over_pin_map_max"), hi);
        headline = median;
    }
    r.headline(
        "b3",
        "B3 per-chunk rebuild after a 4 KiB invalidation / pin + DMA map of the same pages (64 MiB region)",
        "median of rounds",
        headline,
        Target::AtMost(1.2),
    );
    r.line(format!("\nHeadline (64 MiB region): {headline:.2}x; target <= 1.2x.\n"));
    Ok(())
}
