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
//! `sum(rebuild_ns) / (sum(pin_ns) + sum(map_ns))`, the same pages in the
//! same boot, and the headline is the median over the rounds (64 MiB
//! region).

use std::collections::BTreeMap;

use warpq::sys::*;
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
    let sums = hist_sums(path);
    dev.unregister(h).map_err(|e| e.to_string())?;
    Ok(Samples { steady, after, sums })
}

/// `sum(rebuild_ns) / (sum(pin_ns) + sum(map_ns))` of one round, and the
/// per-rebuild means (µs) of both sides; `None` without samples.
fn overhead(sums: &BTreeMap<String, u64>) -> Option<(f64, f64, f64)> {
    let get = |name: &str| sums.get(name).copied().unwrap_or(0) as f64;
    let (rebuild, pin_map) = (get("rebuild_ns"), get("pin_ns") + get("map_ns"));
    (rebuild > 0.0 && pin_map > 0.0).then(|| {
        let n = SAMPLES as f64 * 1000.0;
        (rebuild / pin_map, rebuild / n, pin_map / n)
    })
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
            let Samples { steady: s, after: mut a, sums } = samples(path, *len)?;
            round_p50[i].push(percentile(&mut a, 0.5));
            steady[i].extend(s);
            after[i].extend(a);
            let (ratio, rebuild_us, pin_map_us) = overhead(&sums)
                .ok_or(format!("{name}: the driver's histograms have no rebuild_ns, pin_ns or map_ns sums"))?;
            round_overhead[i].push(ratio);
            means[i].0 += rebuild_us / ROUNDS as f64;
            means[i].1 += pin_map_us / ROUNDS as f64;
            // The driver's rebuild histogram of the last round, per size.
            if round == ROUNDS - 1 {
                let driver = hist_read(path);
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
        "mean ratio",
        headline,
        Target::AtMost(1.2),
    );
    r.line(format!("\nHeadline (64 MiB region): {headline:.2}x; target <= 1.2x.\n"));
    Ok(())
}
