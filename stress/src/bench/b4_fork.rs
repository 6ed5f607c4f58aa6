//! B4: fork+exit+wait plus the parent's first 4 KiB command after it, with
//! 64 MiB registered, against the same process with the same 64 MiB
//! populated and not registered, for each backing and policy.
//!
//! Both sides: a device file with its queue mapped, a 4 KiB buffer
//! registered read/write, 64 MiB of anonymous memory written once. The
//! measured side also registers the 64 MiB read/write and its command is a
//! FILL of the first 4 KiB of it; the baseline's is a FILL of the 4 KiB
//! buffer. The cases are measured in [`ROUNDS`] interleaved rounds (each
//! round measures every case, the baseline first); a round's ratio is its
//! case p50 over its baseline p50, and the headline is the median of the
//! rounds' ratios, with their spread.

use std::time::{Duration, Instant};

use warpq::sys::*;
use warpq::Device;

use super::report::{Report, Target};
use super::{percentile, set_backing, set_policy};
use crate::harness;
use crate::stream::{push_all, reap, sqe};
use crate::Anon;

const ROUNDS: usize = 5;
const SAMPLES: usize = 8;
const BIG: usize = 64 << 20;

/// fork+exit+wait latency (µs), `n` times.
pub(super) fn fork_latencies(n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            // The child exits at once.
            if let Ok(child) = harness::spawn(|| 0) {
                child.wait(Duration::MAX);
            }
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// One configuration: the module parameters its queue is created under and
/// whether the 64 MiB is registered.
struct Case {
    label: &'static str,
    backing: &'static str,
    policy: &'static str,
    registered: bool,
    target: Target,
}

const CASES: [Case; 5] = [
    Case {
        label: "without (unregistered)",
        backing: "pin",
        policy: "filtered",
        registered: false,
        target: Target::None,
    },
    Case { label: "pin filtered", backing: "pin", policy: "filtered", registered: true, target: Target::AtMost(2.0) },
    Case { label: "pin strict", backing: "pin", policy: "strict", registered: true, target: Target::None },
    Case {
        label: "mirror filtered",
        backing: "mirror",
        policy: "filtered",
        registered: true,
        target: Target::AtMost(1.3),
    },
    Case { label: "mirror strict", backing: "mirror", policy: "strict", registered: true, target: Target::AtMost(1.3) },
];

/// `SAMPLES` samples (µs) of fork+exit+wait plus one 4 KiB FILL, in a fresh
/// queue of `case`'s configuration.
fn samples(path: &str, case: &Case) -> Result<Vec<f64>, String> {
    set_backing(case.backing);
    set_policy(case.policy);
    let dev = Device::open(path).map_err(|e| e.to_string())?;
    let mut q = dev.queue().map_err(|e| e.to_string())?;
    let small = Anon::new(4096);
    let big = Anon::new(BIG);
    big.write(&vec![3u8; BIG]);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: raw pointers only; unregistered below, before the buffers go.
    let h_small = unsafe { dev.register_raw(small.ptr(), small.len(), rw) }.map_err(|e| e.to_string())?;
    let h_big = if case.registered {
        // SAFETY: as above.
        Some(unsafe { dev.register_raw(big.ptr(), big.len(), rw) }.map_err(|e| e.to_string())?)
    } else {
        None
    };
    let target = if case.registered { big.addr(0) } else { small.addr(0) };
    push_all(&mut q, &[sqe(WARPQ_OP_FILL, 1, 0, target, 4096, 1)])?;
    reap(&mut q)?;
    let mut v = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let t = Instant::now();
        if let Ok(child) = harness::spawn(|| 0) {
            child.wait(Duration::MAX);
        }
        push_all(&mut q, &[sqe(WARPQ_OP_FILL, 2 + i as u64, 0, target, 4096, 7)])?;
        let c = reap(&mut q)?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
        if c.status != WARPQ_STATUS_OK {
            return Err(format!("{}: the FILL after fork completed with status {}", case.label, c.status));
        }
    }
    if let Some(h) = h_big {
        dev.unregister(h).map_err(|e| e.to_string())?;
    }
    dev.unregister(h_small).map_err(|e| e.to_string())?;
    Ok(v)
}

pub(super) fn b4(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B4 fork + exit + wait + the parent's first 4 KiB command, 64 MiB registered (µs)\n");
    r.line(format!(
        "{ROUNDS} interleaved rounds of {SAMPLES} samples per case. Baseline: the same process (queue mapped, a \
         4 KiB buffer registered, 64 MiB populated) with the 64 MiB not registered, its FILL going to the 4 KiB \
         buffer; the other cases register the 64 MiB too and FILL its first 4 KiB.\n"
    ));
    // p50 of each case in each round.
    let mut p50s = vec![Vec::with_capacity(ROUNDS); CASES.len()];
    let mut all = vec![Vec::new(); CASES.len()];
    for _ in 0..ROUNDS {
        for (i, case) in CASES.iter().enumerate() {
            let mut v = samples(path, case)?;
            p50s[i].push(percentile(&mut v, 0.5));
            all[i].extend(v);
        }
    }
    set_backing("pin");
    set_policy("filtered");
    r.line("| case | p50 (all samples) | p99 | median of the rounds' p50 / baseline p50 | rounds (min..max) |");
    r.line("|---|---|---|---|---|");
    for (i, case) in CASES.iter().enumerate() {
        let ratios: Vec<f64> = (0..ROUNDS).map(|k| p50s[i][k] / p50s[0][k]).collect();
        let mut sorted = ratios.clone();
        let median = percentile(&mut sorted, 0.5);
        let (lo, hi) = (sorted[0], sorted[sorted.len() - 1]);
        let p50 = percentile(&mut all[i], 0.5);
        let p99 = percentile(&mut all[i], 0.99);
        r.line(format!("| {} | {p50:.0} | {p99:.0} | {median:.2}x | {lo:.2}..{hi:.2} |", case.label));
        let key = case.label.split(' ').take(2).collect::<Vec<_>>().join("_").replace(['(', ')'], "");
        r.figure(&format!("b4_{key}_p50_us"), p50);
        if case.registered {
            r.figure(&format!("b4_{key}_over_without"), median);
            r.figure(&format!("b4_{key}_over_without_min"), lo);
            r.figure(&format!("b4_{key}_over_without_max"), hi);
            r.headline(
                "b4",
                "B4 fork+exit+wait+first command p50, 64 MiB registered / not",
                case.label,
                median,
                case.target,
            );
        }
    }
    r.line(
        "\nTargets: mirror <= 1.3x, pin filtered <= 2x (median of the rounds). Device-writable regions are torn \
         down at fork's PROTECTION_PAGE under both policies and backings, so fork copies nothing; the first FILL \
         after it rebuilds only the chunk it touches (one chunk of `chunk_kb`, not the 16 384 pages of the region).\n",
    );
    Ok(())
}
