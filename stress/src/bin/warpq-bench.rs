//! warpq-bench: side-by-side measurements in one boot (run by `make bench`
//! on the perf kernel). Every headline figure is a ratio of two things
//! measured here, in this run, with the raw numbers beside it.
//!
//! Prints a Markdown report, then the same figures as JSON between the
//! lines `==WARPQ-BENCH-JSON-BEGIN==` and `==WARPQ-BENCH-JSON-END==`.
//!
//! B1 submission throughput (NOP and 64-byte COPY: mapped ring vs an ioctl
//!    per command vs an ioctl per batch of 32; 1 and 2 processes);
//! B2 munmap latency of a registered 64-page buffer vs the same buffer
//!    unregistered (idle queue, and with commands in flight);
//! B4 fork+exit+wait latency with 64 MiB registered and an active queue vs
//!    without, for each policy;
//! B5 teardowns caused by unrelated address-space activity, strict vs
//!    filtered.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use warpq::sys::*;
use warpq::{Device, Queue};
use warpq_stress::stream::{push_all, reap, sqe};
use warpq_stress::Anon;

const PAGE: usize = 4096;

struct Report {
    md: String,
    json: Vec<String>,
}

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        self.md.push_str(s.as_ref());
        self.md.push('\n');
    }
    fn figure(&mut self, key: &str, value: f64) {
        self.json.push(format!("\"{key}\": {value:.3}"));
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0.0)
}

fn set_policy(policy: &str) {
    let _ = std::fs::write("/sys/module/warpq/parameters/policy", policy);
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Ring,
    IoctlEach,
    IoctlBatch32,
}

/// Commands per second for `secs` seconds on a fresh queue of this process.
fn throughput(dev: &Device, path: Path, copy: bool, secs: f64) -> Result<f64, String> {
    let mut q = dev.queue().map_err(|e| format!("queue: {e}"))?;
    let buf = Anon::new(16 * PAGE);
    // SAFETY: only raw pointers refer to the buffer while registered.
    let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }.map_err(|e| e.to_string())?;
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
fn throughput_procs(path_name: &str, procs: usize, path: Path, copy: bool, secs: f64) -> Result<f64, String> {
    let mut pipes = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..procs {
        let mut fds = [0; 2];
        // SAFETY: a pipe for the child's result.
        unsafe { libc::pipe(fds.as_mut_ptr()) };
        // SAFETY: the child measures, writes its figure and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let rate = Device::open(path_name).map_err(|e| e.to_string()).and_then(|d| throughput(&d, path, copy, secs)).unwrap_or(-1.0);
            let bytes = rate.to_le_bytes();
            // SAFETY: writing 8 bytes to our pipe, then leaving.
            unsafe {
                libc::write(fds[1], bytes.as_ptr().cast(), 8);
                libc::_exit(0);
            }
        }
        // SAFETY: the parent keeps the read end only.
        unsafe { libc::close(fds[1]) };
        pipes.push(fds[0]);
        pids.push(pid);
    }
    let mut total = 0.0;
    for (fd, pid) in pipes.into_iter().zip(pids) {
        let mut b = [0u8; 8];
        // SAFETY: reading the child's 8 bytes, then reaping it.
        unsafe {
            libc::read(fd, b.as_mut_ptr().cast(), 8);
            libc::close(fd);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let r = f64::from_le_bytes(b);
        if r < 0.0 {
            return Err("a child's measurement failed".into());
        }
        total += r;
    }
    Ok(total)
}

fn b1(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B1 submission throughput (commands/s)\n");
    r.line("| command | processes | mapped ring | ioctl per command | ioctl per 32 | ring / ioctl each | ring / ioctl 32 |");
    r.line("|---|---|---|---|---|---|---|");
    for copy in [false, true] {
        for procs in [1usize, 2] {
            let ring = throughput_procs(path, procs, Path::Ring, copy, 2.0)?;
            let each = throughput_procs(path, procs, Path::IoctlEach, copy, 2.0)?;
            let b32 = throughput_procs(path, procs, Path::IoctlBatch32, copy, 2.0)?;
            let name = if copy { "COPY 64 B" } else { "NOP" };
            r.line(format!(
                "| {name} | {procs} | {ring:.0} | {each:.0} | {b32:.0} | {:.1}x | {:.2}x |",
                ring / each,
                ring / b32
            ));
            let k = format!("b1_{}_{}p", if copy { "copy64" } else { "nop" }, procs);
            r.figure(&format!("{k}_ring_ops"), ring);
            r.figure(&format!("{k}_ioctl_each_ops"), each);
            r.figure(&format!("{k}_ioctl_batch32_ops"), b32);
            r.figure(&format!("{k}_ring_over_each"), ring / each);
            r.figure(&format!("{k}_ring_over_batch32"), ring / b32);
        }
    }
    r.line("\nTargets: mapped ring >= 10x an ioctl per command and >= 1x an ioctl per 32 (NOP).\n");
    Ok(())
}

/// munmap latencies (µs) of a 64-page buffer, registered or not, `n` times.
fn munmap_latencies(dev: &Device, q: &mut Queue<'_>, registered: bool, busy: bool, n: usize) -> Result<Vec<f64>, String> {
    let other = Anon::new(64 * PAGE);
    // SAFETY: raw pointers only.
    let ho = unsafe { dev.register_raw(other.ptr(), other.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }.map_err(|e| e.to_string())?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let mut buf = Anon::new(64 * PAGE);
        buf.write(&vec![1u8; 64 * PAGE]);
        let handle = if registered {
            // SAFETY: raw pointers only; unmapped below on purpose.
            Some(unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }.map_err(|e| e.to_string())?)
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

fn b2(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B2 invalidation: munmap of a 64-page buffer (µs)\n");
    r.line("| case | p50 | p99 | p50 / unregistered | p99 / unregistered |");
    r.line("|---|---|---|---|---|");
    let mut results = Vec::new();
    for (name, registered, busy) in [("unregistered", false, false), ("registered, idle queue", true, false), ("registered, commands in flight", true, true)] {
        let dev = Device::open(path).map_err(|e| e.to_string())?;
        let mut q = dev.queue().map_err(|e| e.to_string())?;
        let mut all = munmap_latencies(&dev, &mut q, registered, busy, 200)?;
        let p50 = percentile(&mut all, 0.5);
        let p99 = percentile(&mut all, 0.99);
        results.push((name, p50, p99));
    }
    let (_, base50, base99) = results[0];
    for (name, p50, p99) in &results {
        r.line(format!("| {name} | {p50:.1} | {p99:.1} | {:.2}x | {:.2}x |", p50 / base50, p99 / base99));
        let k = name.replace([' ', ','], "_");
        r.figure(&format!("b2_{k}_p50_us"), *p50);
        r.figure(&format!("b2_{k}_p99_us"), *p99);
    }
    r.line("\nTarget: p99 with an idle queue <= 3x the unregistered munmap.\n");
    Ok(())
}

/// fork+exit+wait latency (µs), `n` times.
fn fork_latencies(n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            // SAFETY: the child exits at once.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: leave the child.
                unsafe { libc::_exit(0) };
            }
            // SAFETY: our child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// Round-trip latency (µs) of one 4 KiB FILL.
fn round_trip(q: &mut Queue<'_>, addr: u64) -> Result<f64, String> {
    let t = Instant::now();
    push_all(q, &[sqe(WARPQ_OP_FILL, 9, 0, addr, 4096, 1)])?;
    let c = reap(q)?;
    if c.status != WARPQ_STATUS_OK {
        return Err(format!("FILL failed with status {}", c.status));
    }
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

fn b3(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B3 rebuild: first command after an invalidation vs steady state (µs)\n");
    r.line("| buffer | steady p50 | after invalidation p50 | ratio |");
    r.line("|---|---|---|---|");
    for pages in [64usize, 1024] {
        let dev = Device::open(path).map_err(|e| e.to_string())?;
        let mut q = dev.queue().map_err(|e| e.to_string())?;
        let buf = Anon::new(pages * PAGE);
        buf.write(&vec![5u8; pages * PAGE]);
        // SAFETY: raw pointers only; unregistered below.
        let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }.map_err(|e| e.to_string())?;
        let mut steady: Vec<f64> = (0..100).map(|_| round_trip(&mut q, buf.addr(0))).collect::<Result<_, _>>()?;
        let mut after = Vec::new();
        for _ in 0..30 {
            // Invalidate (one page DONTNEED: CLEAR tears the region down).
            // SAFETY: advice on our own mapping.
            unsafe { libc::madvise(buf.ptr().add(PAGE).cast(), PAGE, libc::MADV_DONTNEED) };
            after.push(round_trip(&mut q, buf.addr(0))?);
        }
        let s50 = percentile(&mut steady, 0.5);
        let a50 = percentile(&mut after, 0.5);
        r.line(format!("| {pages} pages | {s50:.0} | {a50:.0} | {:.1}x |", a50 / s50));
        r.figure(&format!("b3_{pages}p_steady_p50_us"), s50);
        r.figure(&format!("b3_{pages}p_after_invalidation_p50_us"), a50);
        dev.unregister(h).map_err(|e| e.to_string())?;
    }
    r.line("\nThe per-phase costs (pin_ns, map_ns, rebuild_ns, unmap_ns, unpin_ns) are in `warpqctl hist` after the run.\n");
    Ok(())
}

fn b4(path: &str, r: &mut Report) -> Result<(), String> {
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
        let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }.map_err(|e| e.to_string())?;
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
        dev.unregister(h).map_err(|e| e.to_string())?;
    }
    set_policy("filtered");
    let _ = base99;
    r.line("\nTarget: filtered <= 1.3x; strict reported as it is. Each sample includes one FILL after the fork (under strict it pays the rebuild of the 64 MiB).\n");
    Ok(())
}

fn b5(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B5 teardowns caused by unrelated activity (mprotect/mmap/munmap of other memory, fork, clear_refs)\n");
    r.line("| policy | invalidations | teardowns | ignored |");
    r.line("|---|---|---|---|");
    let mut teardowns = Vec::new();
    for policy in ["strict", "filtered"] {
        set_policy(policy);
        let dev = Device::open(path).map_err(|e| e.to_string())?;
        let mut q = dev.queue().map_err(|e| e.to_string())?;
        let buf = Anon::new(64 * PAGE);
        // SAFETY: raw pointers only; unregistered below.
        let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }.map_err(|e| e.to_string())?;
        let before = dev.stats().map_err(|e| e.to_string())?;
        for i in 0..100 {
            let other = Anon::new(16 * PAGE);
            other.write(&[1u8; 4096]);
            // SAFETY: our own mapping.
            unsafe { libc::mprotect(other.ptr().cast(), other.len(), libc::PROT_READ) };
            drop(other);
            if i % 10 == 0 {
                let _ = std::fs::write("/proc/self/clear_refs", "4");
                fork_latencies(1);
            }
            push_all(&mut q, &[sqe(WARPQ_OP_FILL, i, 0, buf.addr(0), 4096, i)])?;
            reap(&mut q)?;
        }
        let after = dev.stats().map_err(|e| e.to_string())?;
        let (inv, td, ign) = (
            after.invalidations - before.invalidations,
            after.teardowns - before.teardowns,
            after.ignored_by_policy - before.ignored_by_policy,
        );
        r.line(format!("| {policy} | {inv} | {td} | {ign} |"));
        r.figure(&format!("b5_{policy}_teardowns"), td as f64);
        teardowns.push(td);
        dev.unregister(h).map_err(|e| e.to_string())?;
    }
    set_policy("filtered");
    let removed = if teardowns[0] == 0 { 100.0 } else { 100.0 * (teardowns[0] - teardowns[1]) as f64 / teardowns[0] as f64 };
    r.line(format!("\nfiltered removes {removed:.1}% of strict's teardowns (target >= 99%: none of these events can change the device's pages).\n"));
    r.figure("b5_removed_percent", removed);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let path = "/dev/warpq0";
    let mut r = Report { md: String::new(), json: Vec::new() };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(r.md, "# warpq benchmark report\n\nOne boot of the perf kernel ({}) under QEMU TCG, 2 vCPUs; every ratio compares figures measured in this run.\n", kernel.trim());
    let mut failed = false;
    for (name, f) in [("B1", b1 as fn(&str, &mut Report) -> Result<(), String>), ("B2", b2), ("B3", b3), ("B4", b4), ("B5", b5)] {
        if let Err(e) = f(path, &mut r) {
            r.line(format!("\n**{name} failed: {e}**\n"));
            failed = true;
        }
    }
    println!("{}", r.md);
    println!("==WARPQ-BENCH-JSON-BEGIN==");
    println!("{{{}}}", r.json.join(", "));
    println!("==WARPQ-BENCH-JSON-END==");
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
