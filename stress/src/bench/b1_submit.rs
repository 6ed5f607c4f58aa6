//! B1: submission throughput, the mapped ring against an ioctl per command
//! and an ioctl per batch of 32.

use std::io::Write;
use std::time::{Duration, Instant};

use warpq::sys::*;
use warpq::Device;

use super::report::{Report, Target};
use super::{pipe, read_f64, spread, PAGE};
use crate::harness;
use crate::stream::{reap, sqe};
use crate::Anon;

/// How the commands reach the driver.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Path {
    Ring,
    IoctlEach,
    IoctlBatch32,
}

/// Pins this process to CPU 1 and every `warpq-engine` kernel thread to CPU
/// 0, so that the submitter and the engine never share a CPU. Without that,
/// the guest scheduler sometimes places them together, and the ring's
/// throughput then drops to one batch per scheduler tick (128 commands per
/// 4 ms: about 32 000/s) instead of millions: a bimodal figure that hides a
/// few percent of difference.
pub(super) fn pin_apart() -> Result<(), String> {
    // SAFETY: no precondition.
    if unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } < 2 {
        return Err("one CPU: nothing to pin apart".into());
    }
    let set = |pid: libc::pid_t, cpu: usize| -> Result<(), String> {
        // SAFETY: an all-zero cpu_set_t is the empty set.
        let mut s: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu` is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut s) };
        // SAFETY: `s` is a cpu_set_t of the size passed.
        if unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &s) } != 0 {
            return Err(format!("sched_setaffinity({pid}, CPU {cpu}): {}", std::io::Error::last_os_error()));
        }
        Ok(())
    };
    set(0, 1)?;
    let mut engines = 0;
    for pid in super::engine_threads() {
        set(pid, 0)?;
        engines += 1;
    }
    if engines == 0 {
        return Err("no warpq-engine thread to pin".into());
    }
    Ok(())
}

/// Commands per second for `secs` seconds on a fresh queue of this process;
/// with `pin`, the submitter and the engine on separate CPUs ([`pin_apart`]).
pub(super) fn throughput(dev: &Device, path: Path, copy: bool, secs: f64, pin: bool) -> Result<f64, String> {
    let mut q = dev.queue().map_err(|e| format!("queue: {e}"))?;
    if pin {
        pin_apart()?;
    }
    let buf = Anon::new(16 * PAGE);
    // SAFETY: only raw pointers refer to the buffer while registered.
    let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
        .map_err(|e| e.to_string())?;
    let cmd = |i: u64| {
        if copy {
            sqe(WARPQ_OP_COPY, i, buf.addr(0), buf.addr(8 * PAGE), 64, 0)
        } else {
            sqe(WARPQ_OP_NOP, i, 0, 0, 0, 0)
        }
    };
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut done = 0u64;
    let mut in_flight = 0u64;
    let mut next = 0u64;
    while Instant::now() < deadline {
        match path {
            Path::Ring => {
                while in_flight < 128 {
                    if q.push(&cmd(next)).is_err() {
                        break;
                    }
                    next += 1;
                    in_flight += 1;
                }
                q.submit().map_err(|e| e.to_string())?;
            }
            Path::IoctlEach => {
                dev.submit_batch(&[cmd(next)]).map_err(|e| e.to_string())?;
                next += 1;
                in_flight += 1;
            }
            Path::IoctlBatch32 => {
                let batch: Vec<_> = (0..32).map(|k| cmd(next + k)).collect();
                let n = dev.submit_batch(&batch).map_err(|e| e.to_string())?;
                next += u64::from(n);
                in_flight += u64::from(n);
            }
        }
        // Reap what is there; never let more than a ring's worth pile up.
        loop {
            while let Some(c) = q.pop() {
                if c.status != WARPQ_STATUS_OK {
                    return Err(format!("command {} failed with status {}", c.user_data, c.status));
                }
                done += 1;
                in_flight -= 1;
            }
            if in_flight < 200 {
                break;
            }
            std::hint::spin_loop();
        }
    }
    while in_flight > 0 {
        reap(&mut q)?;
        done += 1;
        in_flight -= 1;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    dev.unregister(h).map_err(|e| e.to_string())?;
    Ok(rate)
}

/// The same measurement in `procs` processes at once (each its own queue).
pub(super) fn throughput_procs(
    path_name: &str,
    procs: usize,
    path: Path,
    copy: bool,
    secs: f64,
    pin: bool,
) -> Result<f64, String> {
    let mut kids = Vec::new();
    for _ in 0..procs {
        let (res_r, mut res_w) = pipe()?;
        // The child measures and writes its figure (-1 if it failed).
        let child = harness::spawn(|| {
            let rate = Device::open(path_name)
                .map_err(|e| e.to_string())
                .and_then(|d| throughput(&d, path, copy, secs, pin))
                .unwrap_or_else(|e| {
                    eprintln!("warpq-bench: {e}");
                    -1.0
                });
            let _ = res_w.write_all(&rate.to_le_bytes());
            0
        })
        .map_err(|e| format!("fork: {e}"))?;
        // The parent keeps the read end only (`res_w` closes here).
        kids.push((child, res_r));
    }
    let mut total = 0.0;
    let mut failed = false;
    for (child, mut res) in kids {
        let rate = read_f64(&mut res).unwrap_or(-1.0);
        child.wait(Duration::MAX);
        if rate < 0.0 {
            failed = true;
        }
        total += rate;
    }
    if failed {
        return Err("a child's measurement failed".into());
    }
    Ok(total)
}

/// Rounds per B1 row; every figure is their median.
const ROUNDS: usize = 5;

/// Every `warpq-engine` thread back on every CPU (after [`pin_apart`]).
fn unpin_engines() {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut all: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: no precondition.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    for cpu in 0..cpus {
        // SAFETY: `cpu` is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut all) };
    }
    for pid in super::engine_threads() {
        // SAFETY: `all` is a cpu_set_t of the size passed.
        unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &all) };
    }
}

pub(super) fn b1(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B1 submission throughput (commands/s)\n");
    r.line(format!(
        "{ROUNDS} interleaved rounds per row: in each round the three paths run one after the other, 2 s each, in \
         fresh queues of fresh processes over the same registered 16-page buffer; only the way commands reach the \
         driver differs (the ring keeps up to 128 in flight and reaps as it goes; the ioctl paths submit one, or 32, \
         per WARPQ_IOC_SUBMIT and reap from the ring). Figures are the medians of the rounds, ratios the medians of \
         the rounds' ratios with their range. Unpinned: the scheduler places submitters and the engine pool's \
         threads; pinned: the submitter on CPU 1, every engine thread on CPU 0.\n"
    ));
    r.line("| command | processes | placement | mapped ring | ioctl per command | ioctl per 32 | ring / ioctl each (range) | ring / ioctl 32 (range) |");
    r.line("|---|---|---|---|---|---|---|---|");
    let rows = [
        (false, 1usize, false),
        (false, 2, false),
        (true, 1, false),
        (true, 2, false),
        (false, 1, true),
        (true, 1, true),
    ];
    for (copy, procs, pin) in rows {
        let (mut ring, mut each, mut b32) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            ring.push(throughput_procs(path, procs, Path::Ring, copy, 2.0, pin)?);
            each.push(throughput_procs(path, procs, Path::IoctlEach, copy, 2.0, pin)?);
            b32.push(throughput_procs(path, procs, Path::IoctlBatch32, copy, 2.0, pin)?);
        }
        if pin {
            unpin_engines();
        }
        let over_each: Vec<f64> = ring.iter().zip(&each).map(|(a, b)| a / b).collect();
        let over_32: Vec<f64> = ring.iter().zip(&b32).map(|(a, b)| a / b).collect();
        let (e50, elo, ehi) = spread(&over_each);
        let (t50, tlo, thi) = spread(&over_32);
        let name = if copy { "COPY 64 B" } else { "NOP" };
        let placement = if pin { "pinned" } else { "unpinned" };
        r.line(format!(
            "| {name} | {procs} | {placement} | {:.0} | {:.0} | {:.0} | {e50:.1}x ({elo:.1}..{ehi:.1}) | {t50:.2}x ({tlo:.2}..{thi:.2}) |",
            spread(&ring).0,
            spread(&each).0,
            spread(&b32).0,
        ));
        let k = format!("b1_{}_{}p_{placement}", if copy { "copy64" } else { "nop" }, procs);
        r.figure(&format!("{k}_ring_ops"), spread(&ring).0);
        r.figure(&format!("{k}_ioctl_each_ops"), spread(&each).0);
        r.figure(&format!("{k}_ioctl_batch32_ops"), spread(&b32).0);
        r.figure(&format!("{k}_ring_over_each"), e50);
        r.figure(&format!("{k}_ring_over_each_min"), elo);
        r.figure(&format!("{k}_ring_over_each_max"), ehi);
        r.figure(&format!("{k}_ring_over_batch32"), t50);
        r.figure(&format!("{k}_ring_over_batch32_min"), tlo);
        r.figure(&format!("{k}_ring_over_batch32_max"), thi);
        let chart_title = "B1 mapped ring throughput / ioctl throughput";
        let (t_each, t_32) = if !copy && procs == 1 && !pin {
            (Target::AtLeast(10.0), Target::AtLeast(1.2))
        } else {
            (Target::None, Target::None)
        };
        let label = format!("{name} {procs}p {placement}");
        r.headline("b1", chart_title, &format!("{label}: ring / ioctl each"), e50, t_each);
        r.headline("b1", chart_title, &format!("{label}: ring / ioctl 32"), t50, t_32);
        if procs == 2 {
            // Not bimodal any more: every round within 2x of the median.
            let worst = over_each.iter().map(|&x| (x / e50).max(e50 / x)).fold(1.0, f64::max);
            r.figure(&format!("{k}_ring_over_each_worst_round_vs_median"), worst);
        }
    }
    r.line(
        "\nTargets (NOP, 1 process, unpinned): mapped ring >= 10x an ioctl per command and >= 1.2x an ioctl per 32. \
         The 2-process rows: every round within 2x of the median (figure `..._worst_round_vs_median`).\n",
    );
    Ok(())
}
