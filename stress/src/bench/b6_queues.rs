//! B6: invalidation with many queues, in one process and spread over
//! several.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use warpq::sys::*;
use warpq::sysfs::Histogram;
use warpq::{Device, Queue};

use super::report::{log2_hist, Report, Target};
use super::{fmt_opt, hist_of, hist_quantile_us, hist_read, hist_reset, percentile, pipe, read_f64, PAGE};
use crate::harness::{self, Child};
use crate::stream::{push_all, reap, sqe};
use crate::Anon;

const B6_PAGES: usize = 64;
/// What a B6 child is told to do instead of a queue index: leave.
const B6_EXIT: u64 = u64::MAX;

/// A B6 process: `n` queues (device files with their rings mapped), each
/// with a registered 64-page buffer that stays (built by a FILL); then, on
/// each index `k` read from `cmd`, one sample on queue `k % n`: a fresh
/// 64-page buffer written, registered, munmapped (timed) and unregistered;
/// its µs go to `res` (-1 on failure). Says it is ready with a 0 first.
fn b6_child(path: &str, n: usize, cmd: &mut File, res: &mut File) -> Result<(), String> {
    let len = B6_PAGES * PAGE;
    let devs: Vec<Device> =
        (0..n).map(|_| Device::open(path)).collect::<Result<_, _>>().map_err(|e| format!("open: {e}"))?;
    let mut qs: Vec<Queue<'_>> =
        devs.iter().map(|d| d.queue()).collect::<Result<_, _>>().map_err(|e| format!("queue: {e}"))?;
    let standing: Vec<Anon> = (0..n).map(|_| Anon::new(len)).collect();
    for ((dev, q), buf) in devs.iter().zip(qs.iter_mut()).zip(&standing) {
        buf.write(&vec![2u8; len]);
        // SAFETY: raw pointers only; the buffer stays mapped until this
        // process is done.
        unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
            .map_err(|e| format!("register: {e}"))?;
        push_all(q, &[sqe(WARPQ_OP_FILL, 1, 0, buf.addr(0), PAGE as u64, 3)])?;
        let c = reap(q)?;
        if c.status != WARPQ_STATUS_OK {
            return Err(format!("FILL failed with status {}", c.status));
        }
    }
    res.write_all(&0f64.to_le_bytes()).map_err(|e| e.to_string())?;
    let data = vec![1u8; len];
    loop {
        let mut b = [0u8; 8];
        cmd.read_exact(&mut b).map_err(|e| e.to_string())?;
        let k = u64::from_le_bytes(b);
        if k == B6_EXIT {
            return Ok(());
        }
        let dev = &devs[k as usize % n];
        let mut buf = Anon::new(len);
        buf.write(&data);
        // SAFETY: raw pointers only; unmapped below on purpose.
        let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
            .map_err(|e| format!("register: {e}"))?;
        let t = Instant::now();
        buf.unmap();
        let us = t.elapsed().as_secs_f64() * 1e6;
        dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
        res.write_all(&us.to_le_bytes()).map_err(|e| e.to_string())?;
    }
}

/// One B6 case: `queues` queues spread evenly over `procs` processes,
/// `samples` munmaps taken one at a time, round robin over the processes and
/// their queues. Returns the latencies (µs) and the driver's histograms
/// (read before the processes exit: their exit invalidates the standing
/// buffers).
fn b6_case(path: &str, queues: usize, procs: usize, samples: usize) -> Result<(Vec<f64>, Vec<Histogram>), String> {
    let mut kids: Vec<(Child, File, File)> = Vec::new();
    let mut result = (|| {
        for p in 0..procs {
            let (mut cmd_r, cmd_w) = pipe()?;
            let (res_r, mut res_w) = pipe()?;
            let n = queues / procs + usize::from(p < queues % procs);
            let (cmd_w_fd, res_r_fd) = (cmd_w.as_raw_fd(), res_r.as_raw_fd());
            let child = harness::spawn(|| {
                // SAFETY: the child's copies of the parent's ends of its
                // pipes, which it does not use; their `File`s are never
                // dropped in the child (it leaves with _exit).
                unsafe {
                    libc::close(cmd_w_fd);
                    libc::close(res_r_fd);
                }
                kids.clear(); // closes the parent's ends of earlier children's pipes
                match b6_child(path, n, &mut cmd_r, &mut res_w) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("B6 child ({queues} queues, {procs} processes): {e}");
                        let _ = res_w.write_all(&(-1f64).to_le_bytes());
                        1
                    }
                }
            })
            .map_err(|e| format!("fork: {e}"))?;
            kids.push((child, cmd_w, res_r));
        }
        for (_, _, res) in kids.iter_mut() {
            if read_f64(res)? < 0.0 {
                return Err("a B6 process could not set up its queues".to_string());
            }
        }
        hist_reset(path);
        let mut v = Vec::with_capacity(samples);
        for i in 0..samples {
            let (_, cmd, res) = &mut kids[i % procs];
            cmd.write_all(&((i / procs) as u64).to_le_bytes()).map_err(|e| e.to_string())?;
            let us = read_f64(res)?;
            if us < 0.0 {
                return Err("a B6 sample failed".to_string());
            }
            v.push(us);
        }
        Ok((v, hist_read(path)))
    })();
    for (child, mut cmd, _) in kids {
        let _ = cmd.write_all(&B6_EXIT.to_le_bytes());
        // It leaves on B6_EXIT (or has already).
        let exit = child.wait(Duration::MAX);
        if result.is_ok() && !exit.success() {
            result = Err(format!("a B6 process ended: {exit}"));
        }
    }
    result
}

pub(super) fn b6(path: &str, r: &mut Report) -> Result<(), String> {
    const ROUNDS: usize = 4;
    const SAMPLES: usize = 250;
    let started = Instant::now();
    r.line("## B6 invalidation with many queues: munmap of a registered 64-page buffer (µs)\n");
    r.line("| queues | processes | queues per process | p50 | p99 | p50 / 1 queue | p99 / 1 queue | driver invalidate_ns p50 <= | p99 <= | callbacks |");
    r.line("|---|---|---|---|---|---|---|---|---|---|");
    let cases = [(1usize, 1usize), (8, 1), (64, 1), (1, 1), (8, 8), (64, 16)];
    // The cases in turn, ROUNDS times, so that a slow spell of the host
    // spreads over all of them; samples and driver buckets pooled per case.
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut drv: Vec<BTreeMap<u32, u64>> = vec![BTreeMap::new(); cases.len()];
    for _ in 0..ROUNDS {
        for (i, &(queues, procs)) in cases.iter().enumerate() {
            let (v, driver) = b6_case(path, queues, procs, SAMPLES)?;
            lat[i].extend(v);
            for (b, n) in hist_of(&driver, "invalidate_ns") {
                *drv[i].entry(b).or_insert(0) += n;
            }
        }
    }
    let mut base: Option<(f64, f64)> = None;
    for (i, &(queues, procs)) in cases.iter().enumerate() {
        let v = &mut lat[i];
        let p50 = percentile(v, 0.5);
        let p99 = percentile(v, 0.99);
        let (b50, b99) = *base.get_or_insert((p50, p99));
        let driver = [Histogram { name: "invalidate_ns".into(), buckets: drv[i].clone() }];
        let (d50, calls) = hist_quantile_us(&driver, "invalidate_ns", 0.5);
        let (d99, _) = hist_quantile_us(&driver, "invalidate_ns", 0.99);
        let per = queues / procs;
        let note = if i == 3 { " (again: one queue cannot be spread)" } else { "" };
        r.line(format!(
            "| {queues} | {procs}{note} | {per} | {p50:.1} | {p99:.1} | {:.2}x | {:.2}x | {} | {} | {calls} |",
            p50 / b50,
            p99 / b99,
            fmt_opt(d50),
            fmt_opt(d99)
        ));
        let k = format!("b6_{queues}q_{procs}p{}", if i == 3 { "_again" } else { "" });
        r.figure(&format!("{k}_p50_us"), p50);
        r.figure(&format!("{k}_p99_us"), p99);
        r.figure(&format!("{k}_p50_over_1q"), p50 / b50);
        r.figure(&format!("{k}_p99_over_1q"), p99 / b99);
        if let (Some(d50), Some(d99)) = (d50, d99) {
            r.figure(&format!("{k}_driver_invalidate_p50_le_us"), d50);
            r.figure(&format!("{k}_driver_invalidate_p99_le_us"), d99);
        }
        let series = format!(
            "{queues} queue{}, {procs} process{}{}",
            if queues == 1 { "" } else { "s" },
            if procs == 1 { "" } else { "es" },
            if i == 3 { " (again)" } else { "" }
        );
        r.headline("b6", "B6 munmap p99 / p99 with 1 queue in 1 process", &series, p99 / b99, Target::None);
        r.hist(
            "b6_munmap_user",
            "B6 munmap of a registered 64-page buffer, timed in user space",
            &series,
            "user",
            &log2_hist(v),
        );
        r.hist("b6_invalidate_driver", "B6 the driver's invalidate_ns", &series, "driver", &drv[i]);
    }
    let secs = started.elapsed().as_secs_f64();
    r.figure("b6_seconds", secs);
    r.line(format!(
        "\nA queue is one (device file, process) pair with its ring mapped and a registered 64-page buffer (pinned, \
         one FILL done). Rows 1-3: all queues in one process; rows 4-6: the queues spread evenly over min(queues, 16) \
         processes (8 queues: 8 processes with 1 each; 64 queues: 16 processes with 4 each; 1 queue: one process, i.e. \
         row 1 measured again, which shows the run-to-run noise). Each sample maps, writes and registers a fresh \
         64-page buffer on one queue, then munmaps it (timed); samples are taken one at a time, round robin over the \
         processes and their queues, while every other queue stays idle. The six rows run in turn, {ROUNDS} times, \
         {SAMPLES} samples each time ({} per row), each time with freshly created processes and queues. The driver \
         columns are the upper bounds of the log2 buckets of its `invalidate_ns` histogram holding p50 and p99, over \
         that row's callbacks. No target: information. B6 took {secs:.0} s.\n",
        ROUNDS * SAMPLES
    ));
    Ok(())
}
