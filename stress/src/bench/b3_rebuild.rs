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

use warpq::sys::*;
use warpq::Device;

use super::report::{Report, Target};
use super::{fill_round_trip, hist_of, hist_read, hist_reset, percentile, PAGE};
use crate::Anon;

const ROUNDS: usize = 5;
const SAMPLES: usize = 12;
const SIZES: [(&str, usize); 2] = [("2 MiB", 2 << 20), ("64 MiB", 64 << 20)];

/// (steady samples, after-invalidation samples) for one buffer size.
fn samples(path: &str, len: usize) -> Result<(Vec<f64>, Vec<f64>), String> {
    let dev = Device::open(path).map_err(|e| e.to_string())?;
    let mut q = dev.queue().map_err(|e| e.to_string())?;
    let buf = Anon::new(len);
    buf.write(&vec![5u8; len]);
    // SAFETY: raw pointers only; unregistered below.
    let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
        .map_err(|e| e.to_string())?;
    let target = buf.addr(PAGE);
    let steady: Vec<f64> = (0..SAMPLES).map(|_| fill_round_trip(&mut q, target)).collect::<Result<_, _>>()?;
    let mut after = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        // SAFETY: advice on our own mapping.
        unsafe { libc::madvise(buf.ptr().add(PAGE).cast(), PAGE, libc::MADV_DONTNEED) };
        after.push(fill_round_trip(&mut q, target)?);
    }
    dev.unregister(h).map_err(|e| e.to_string())?;
    Ok((steady, after))
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
    for round in 0..ROUNDS {
        for (i, (name, len)) in SIZES.iter().enumerate() {
            // The driver's rebuild histogram of the last round, per size.
            if round == ROUNDS - 1 {
                hist_reset(path);
            }
            let (s, mut a) = samples(path, *len)?;
            round_p50[i].push(percentile(&mut a, 0.5));
            steady[i].extend(s);
            after[i].extend(a);
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
    Ok(())
}
