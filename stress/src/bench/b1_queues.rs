//! B1Q: the engine pool under many queues. 64 queues in 16 processes (4
//! device files each) against one queue in one process, the same NOP
//! stream on every queue: aggregate commands/s, the slowest queue against
//! the fastest (no queue starves), p99 command latency, and how many
//! kernel threads the module runs meanwhile.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use warpq::sys::*;
use warpq::{Device, Queue};

use super::report::{Report, Target};
use super::{engine_threads, percentile, pipe, read_f64, spread};
use crate::harness;
use crate::stream::sqe;

const ROUNDS: usize = 5;
const SECS: f64 = 3.0;
/// Commands each queue keeps in flight.
const DEPTH: u64 = 32;

/// One process's run: `n` queues (device files), each kept `DEPTH` deep in
/// NOPs for `SECS`, round robin, sleeping in `poll` on all of them when all
/// are full and none completed anything. Per queue its commands/s, then
/// the p99 latency (µs, submission to completion) of every 16th command.
fn run_queues(path: &str, n: usize) -> Result<Vec<f64>, String> {
    let devs: Vec<Device> =
        (0..n).map(|_| Device::open(path)).collect::<Result<_, _>>().map_err(|e| format!("open: {e}"))?;
    let mut qs: Vec<Queue<'_>> =
        devs.iter().map(|d| d.queue()).collect::<Result<_, _>>().map_err(|e| format!("queue: {e}"))?;
    let mut sent = vec![0u64; n];
    let mut done = vec![0u64; n];
    let mut stamps = vec![vec![None::<Instant>; 512]; n];
    let mut lat = Vec::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(SECS);
    let mut fds: Vec<libc::pollfd> =
        devs.iter().map(|d| libc::pollfd { fd: d.as_file().as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    while Instant::now() < deadline {
        let reaped = done.iter().sum::<u64>();
        for (i, q) in qs.iter_mut().enumerate() {
            while sent[i] - done[i] < DEPTH {
                if q.push(&sqe(WARPQ_OP_NOP, sent[i], 0, 0, 0, 0)).is_err() {
                    break;
                }
                if sent[i].is_multiple_of(16) {
                    stamps[i][(sent[i] % 512) as usize] = Some(Instant::now());
                }
                sent[i] += 1;
            }
            q.submit().map_err(|e| e.to_string())?;
            while let Some(c) = q.pop() {
                if c.status != WARPQ_STATUS_OK {
                    return Err(format!("a NOP completed with status {}", c.status));
                }
                if let Some(t) = stamps[i][(c.user_data % 512) as usize].take() {
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
                done[i] += 1;
            }
        }
        // Every queue full and nothing came back this sweep: sleep in poll
        // until one has completions, as an event loop would (a spinning
        // submitter per process would take the CPUs from the engine pool).
        if done.iter().sum::<u64>() == reaped && (0..n).all(|i| sent[i] - done[i] >= DEPTH) {
            // SAFETY: `fds` holds `n` valid pollfds for the duration of the call.
            unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, 100) };
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Drain what is in flight, so the next run starts on idle engines.
    for (i, q) in qs.iter_mut().enumerate() {
        let until = Instant::now() + Duration::from_secs(10);
        while done[i] < sent[i] && Instant::now() < until {
            q.submit().map_err(|e| e.to_string())?;
            while q.pop().is_some() {
                done[i] += 1;
            }
        }
    }
    let mut out: Vec<f64> = done.iter().map(|&d| d as f64 / secs).collect();
    out.push(percentile(&mut lat, 0.99));
    Ok(out)
}

/// `procs` processes of `n` queues at once: every queue's commands/s, and
/// the highest of the processes' p99 latencies.
fn run_procs(path: &str, procs: usize, n: usize) -> Result<(Vec<f64>, f64), String> {
    let mut kids = Vec::new();
    for _ in 0..procs {
        let (res_r, mut res_w) = pipe()?;
        let child = harness::spawn(|| {
            let figures = run_queues(path, n).unwrap_or_else(|e| {
                eprintln!("warpq-bench: B1Q: {e}");
                vec![-1.0; n + 1]
            });
            for f in figures {
                let _ = res_w.write_all(&f.to_le_bytes());
            }
            0
        })
        .map_err(|e| format!("fork: {e}"))?;
        kids.push((child, res_r));
    }
    let (mut rates, mut p99) = (Vec::new(), 0f64);
    let mut failed = false;
    for (child, mut res) in kids {
        for _ in 0..n {
            let rate = read_f64(&mut res).unwrap_or(-1.0);
            failed |= rate < 0.0;
            rates.push(rate);
        }
        p99 = p99.max(read_f64(&mut res).unwrap_or(-1.0));
        child.wait(Duration::MAX);
    }
    if failed {
        return Err("a child's measurement failed".into());
    }
    Ok((rates, p99))
}

pub(super) fn b1_queues(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B1Q the engine pool: 64 queues in 16 processes vs 1 queue (NOP commands/s)\n");
    r.line(format!(
        "{ROUNDS} interleaved rounds; in each, one process with one queue, then 16 processes with 4 queues (device \
         files) each, every queue kept {DEPTH} NOPs deep through its mapped ring for {SECS} s, the process sleeping in poll(2) on \
         its queues whenever all are full and none completed anything (one event loop per process). Aggregate: the sum over \
         the 64 queues; fairness: the slowest queue's rate over the fastest's in the same round; p99: of the \
         submission-to-completion latency of every 16th command, the worst process's. Kernel threads: the module's \
         `warpq-engine` threads, counted while the 64 queues exist and before.\n"
    ));
    let threads_before = engine_threads().len();
    let (mut one, mut one_p99, mut agg, mut fair, mut many_p99) = (vec![], vec![], vec![], vec![], vec![]);
    let mut threads_during = 0;
    for _ in 0..ROUNDS {
        let (rates, p99) = run_procs(path, 1, 1)?;
        one.push(rates[0]);
        one_p99.push(p99);
        let counter = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs_f64(SECS / 2.0));
            engine_threads().len()
        });
        let (rates, p99) = run_procs(path, 16, 4)?;
        threads_during = threads_during.max(counter.join().unwrap_or(0));
        agg.push(rates.iter().sum::<f64>() / one[one.len() - 1]);
        let (lo, hi) = rates.iter().fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        fair.push(if hi > 0.0 { lo / hi } else { 0.0 });
        many_p99.push(p99);
    }
    let med = |v: &Vec<f64>| spread(v);
    let ((o, _, _), (a, alo, ahi), (f, flo, fhi)) = (med(&one), med(&agg), med(&fair));
    let ((p1, _, _), (p64, _, _)) = (med(&one_p99), med(&many_p99));
    r.line("| row | figure | median | range over rounds |");
    r.line("|---|---|---|---|");
    r.line(format!("| 1 queue | commands/s | {o:.0} | |"));
    r.line(format!("| 64 queues / 1 queue | aggregate commands/s | {a:.2}x | {alo:.2}..{ahi:.2} |"));
    r.line(format!("| 64 queues | slowest queue / fastest queue | {f:.2} | {flo:.2}..{fhi:.2} |"));
    r.line(format!("| p99 latency µs | 1 queue / 64 queues | {p1:.0} / {p64:.0} | |"));
    r.line(format!(
        "| kernel threads | `warpq-engine`, with 64 queues / before | {threads_during} / {threads_before} | |"
    ));
    r.figure("b1q_one_queue_ops", o);
    r.figure("b1q_64_over_1_aggregate", a);
    r.figure("b1q_64_over_1_aggregate_min", alo);
    r.figure("b1q_64_over_1_aggregate_max", ahi);
    r.figure("b1q_slowest_over_fastest", f);
    r.figure("b1q_slowest_over_fastest_min", flo);
    r.figure("b1q_p99_us_1_queue", p1);
    r.figure("b1q_p99_us_64_queues", p64);
    r.figure("kernel_threads_with_64_queues", threads_during as f64);
    r.figure("kernel_threads_before", threads_before as f64);
    let title = "B1Q / B6 64 queues in 16 processes vs 1 queue";
    r.headline("b6", title, "aggregate 64 queues / 1 queue", a, Target::AtLeast(0.8));
    r.headline("b6", title, "slowest queue / fastest queue", f, Target::AtLeast(0.5));
    r.line(
        "\nTargets: aggregate >= 0.8x one queue's; slowest queue >= 0.5x the fastest; no more kernel threads than the \
         pool size (`engine_threads`, default one per online CPU).\n",
    );
    Ok(())
}
