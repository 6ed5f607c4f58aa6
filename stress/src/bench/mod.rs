//! `warpq-bench`: side-by-side measurements in one boot (run by `make bench`
//! on the perf kernel). Every headline figure is a ratio of two things
//! measured here, in this run, with the raw numbers beside it.
//!
//! Prints a Markdown report, then the same figures as JSON between the
//! lines `==WARPQ-BENCH-JSON-BEGIN==` and `==WARPQ-BENCH-JSON-END==`: one
//! object holding every figure by name (numbers), plus `headlines` (the
//! ratios with their targets, for `warpq-plot`'s bar charts) and
//! `histograms` (log2 nanosecond buckets, user-side and the driver's).
//!
//! B1 submission throughput (NOP and 64-byte COPY: mapped ring vs an ioctl
//!    per command vs an ioctl per batch of 32; 1 and 2 processes), and the
//!    cost of the compiled-in tracepoints: the same NOP measurement with
//!    warpq.ko and with warpq-notrace.ko (tracepoint calls compiled out),
//!    alternated by rmmod/insmod;
//! B1Q 64 queues in 16 processes against one queue: aggregate throughput,
//!    fairness, p99 latency and the module's kernel threads (the engine
//!    pool);
//! B2 munmap latency of a registered 64-page buffer vs the same buffer
//!    unregistered (idle queue, and with commands in flight);
//! B3 the first command after an invalidation (the rebuild) vs steady state;
//! B4 fork+exit+wait plus the first command after it with 64 MiB
//!    registered vs the same 64 MiB populated and not registered, for each
//!    backing and policy (5 interleaved rounds);
//! B5 teardowns caused by unrelated address-space activity, strict vs
//!    filtered;
//! B6 munmap latency of a registered buffer with 1, 8 and 64 queues, in one
//!    process and spread over up to 16;
//! B7 starvation: one page of the first half of a 64 MiB region dropped
//!    every 5 ms while streams run on both halves: the second half's
//!    throughput against undisturbed, with and without UNORDERED, and the
//!    first half's progress;
//! B8 beyond the device's window: 1 GiB registered under mirror (4x the
//!    edu device's 256 MiB), streamed over while a second process's queue
//!    runs: its throughput against the first streaming within its share;
//! B9 the rebuild of one 2 MiB chunk backed by base pages, a THP or a
//!    hugetlb page, per backing.

mod b1_queues;
mod b1_submit;
mod b1_trace;
mod b2_munmap;
mod b3_rebuild;
mod b4_fork;
mod b5_teardowns;
mod b6_queues;
mod b7_starvation;
mod b8_window;
mod b9_huge;
mod report;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::os::fd::FromRawFd;

use warpq::sysfs::{Histogram, Sysfs};

use report::Report;

const PAGE: usize = 4096;

/// One benchmark: measures on the device at the path, adds to the report.
type Bench = fn(&str, &mut Report) -> Result<(), String>;

/// The benchmarks in the order they run, under the names
/// `warpq-bench NAME...` selects them by (case-insensitive).
const BENCHES: [(&str, Bench); 11] = [
    ("B1", b1_submit::b1),
    ("B1Q", b1_queues::b1_queues),
    ("B1 tracepoint cost", b1_trace::b1_trace),
    ("B2", b2_munmap::b2),
    ("B3", b3_rebuild::b3),
    ("B4", b4_fork::b4),
    ("B5", b5_teardowns::b5),
    ("B6", b6_queues::b6),
    ("B7", b7_starvation::b7),
    ("B8", b8_window::b8),
    ("B9", b9_huge::b9),
];

/// The benchmarks' names, in the order they run.
pub fn names() -> impl Iterator<Item = &'static str> {
    BENCHES.iter().map(|(name, _)| *name)
}

/// Runs the benchmarks named in `only` (all of them if it is empty) on the
/// device at `path` and prints the report; whether every one of them ran
/// to its end (a failed one is reported in its place and the others run).
pub fn run(path: &str, only: &[String]) -> bool {
    let mut r = Report::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(r.md, "# warpq benchmark report\n\nOne boot of the perf kernel ({}) under QEMU TCG, 2 vCPUs; every ratio compares figures measured in this run.\n", kernel.trim());
    let mut failed = false;
    let only: Vec<String> = only.iter().map(|a| a.to_ascii_lowercase()).collect();
    for (name, f) in BENCHES {
        if !only.is_empty() && !only.contains(&name.to_ascii_lowercase()) {
            continue;
        }
        if let Err(e) = f(path, &mut r) {
            r.line(format!("\n**{name} failed: {e}**\n"));
            failed = true;
        }
    }
    r.print();
    !failed
}

/// `warpq0` of `/dev/warpq0`.
fn dev_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Zeroes the device's counters and histograms (nothing if the driver
/// cannot).
fn hist_reset(path: &str) {
    let _ = Sysfs::system().reset(dev_name(path));
}

/// The device's histograms now (empty if unreadable).
fn hist_read(path: &str) -> Vec<Histogram> {
    Sysfs::system().hist(dev_name(path)).unwrap_or_default()
}

/// The sums of the device's histograms in ns, by name (empty if
/// unreadable).
fn hist_sums(path: &str) -> BTreeMap<String, u64> {
    Sysfs::system().hist_sums(dev_name(path)).unwrap_or_default()
}

/// Histogram `name` of `all` (empty if absent).
fn hist_of(all: &[Histogram], name: &str) -> BTreeMap<u32, u64> {
    all.iter().find(|h| h.name == name).map(|h| h.buckets.clone()).unwrap_or_default()
}

/// The upper bound (µs) of the bucket holding quantile `q` of histogram
/// `name`, and its sample count.
fn hist_quantile_us(all: &[Histogram], name: &str, q: f64) -> (Option<f64>, u64) {
    match all.iter().find(|h| h.name == name) {
        Some(h) => (h.quantile_upper_bound(q).map(|ns| ns as f64 / 1000.0), h.total()),
        None => (None, 0),
    }
}

/// Round-trip latency (µs) of one 4 KiB FILL at `addr`, which must
/// complete OK.
fn fill_round_trip(q: &mut warpq::Queue<'_>, addr: u64) -> Result<f64, String> {
    let t = std::time::Instant::now();
    crate::stream::push_all(q, &[crate::stream::sqe(warpq::sys::WARPQ_OP_FILL, 9, 0, addr, 4096, 1)])?;
    let c = crate::stream::reap(q)?;
    if c.status != warpq::sys::WARPQ_STATUS_OK {
        return Err(format!("FILL failed with status {}", c.status));
    }
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

/// The pids of the module's `warpq-engine` kernel threads.
fn engine_threads() -> Vec<libc::pid_t> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<libc::pid_t>().ok()?;
            std::fs::read_to_string(e.path().join("comm")).ok().filter(|c| c.trim() == "warpq-engine").map(|_| pid)
        })
        .collect()
}

/// A figure, or `-` for none.
fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.0}"))
}

/// The `p` quantile of `v` (sorted in place); 0 for none.
fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0.0)
}

/// Sets the driver's invalidation policy (`filtered` or `strict`).
fn set_policy(policy: &str) {
    let _ = std::fs::write("/sys/module/warpq/parameters/policy", policy);
}

/// The backing new queues get (`pin` or `mirror`).
fn set_backing(backing: &str) {
    let _ = std::fs::write("/sys/module/warpq/parameters/backing", backing);
}

/// (median, lowest, highest) of `v`.
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    (percentile(&mut v, 0.5), percentile(&mut v, 0.0), percentile(&mut v, 1.0))
}

/// The median of `v`.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    percentile(&mut v, 0.5)
}

/// A pipe as (read end, write end).
fn pipe() -> Result<(File, File), String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe() writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Reads the 8-byte figure a child wrote.
fn read_f64(f: &mut File) -> Result<f64, String> {
    let mut b = [0u8; 8];
    f.read_exact(&mut b).map_err(|e| format!("reading from a child: {e}"))?;
    Ok(f64::from_le_bytes(b))
}
