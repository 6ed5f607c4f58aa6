//! B4: fork+exit+wait with 64 MiB registered and an active queue, against
//! without warpq, under each policy.

use std::time::{Duration, Instant};

use warpq::sys::*;
use warpq::Device;

use super::report::{Report, Target};
use super::{percentile, set_policy};
use crate::harness;
use crate::stream::{push_all, reap, sqe};
use crate::Anon;

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

pub(super) fn b4(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B4 fork + exit + wait with 64 MiB registered and an active queue (µs)\n");
    r.line("| case | p50 | p99 | p50 / without |");
    r.line("|---|---|---|---|");
    let mut base = fork_latencies(60);
    let base50 = percentile(&mut base, 0.5);
    let base99 = percentile(&mut base, 0.99);
    r.line(format!("| without warpq | {base50:.0} | {base99:.0} | 1.00x |"));
    r.figure("b4_without_p50_us", base50);
    for policy in ["filtered", "strict"] {
        set_policy(policy);
        let dev = Device::open(path).map_err(|e| e.to_string())?;
        let mut q = dev.queue().map_err(|e| e.to_string())?;
        let buf = Anon::new(64 << 20);
        buf.write(&vec![3u8; 64 << 20]);
        // SAFETY: raw pointers only; unregistered below.
        let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
            .map_err(|e| e.to_string())?;
        push_all(&mut q, &[sqe(WARPQ_OP_NOP, 1, 0, 0, 0, 0)])?;
        reap(&mut q)?;
        let mut v = Vec::new();
        for _ in 0..30 {
            v.extend(fork_latencies(1));
            // Keep the queue active: a command after every fork (under
            // strict this pays the rebuild).
            push_all(&mut q, &[sqe(WARPQ_OP_FILL, 2, 0, buf.addr(0), 4096, 7)])?;
            reap(&mut q)?;
        }
        let p50 = percentile(&mut v, 0.5);
        let p99 = percentile(&mut v, 0.99);
        r.line(format!("| {policy} | {p50:.0} | {p99:.0} | {:.2}x |", p50 / base50));
        r.figure(&format!("b4_{policy}_p50_us"), p50);
        r.figure(&format!("b4_{policy}_over_without"), p50 / base50);
        let t = if policy == "filtered" { Target::AtMost(1.3) } else { Target::None };
        r.headline("b4", "B4 fork+exit+wait p50 with 64 MiB registered / without warpq", policy, p50 / base50, t);
        dev.unregister(h).map_err(|e| e.to_string())?;
    }
    set_policy("filtered");
    let _ = base99;
    r.line("\nTarget: filtered <= 1.3x; strict reported as it is. Each sample includes one FILL after the fork (under strict it pays the rebuild of the 64 MiB).\n");
    Ok(())
}
