//! An OOM kill of a process with registered buffers and commands in flight
//! (`warpq-oom-check`).
//!
//! 1. The kernel's OOM killer: each round puts a child in a memory cgroup
//!    limited to 48 MiB; the child registers 4 MiB with the device, fills
//!    its ring with long FILLs and then allocates memory until the kernel
//!    kills it. Checked: it dies of SIGKILL and the cgroup counts an
//!    `oom_kill`.
//! 2. The OOM reaper's non-blocking invalidation. The reaper only reaps an
//!    mm that outlives its killed owner by 2 s, which a victim that exits
//!    at once never does; `process_mrelease(2)` (the user-space OOM killers'
//!    call) runs the very same reaping code, `__oom_reap_task_mm()`, at once
//!    on a SIGKILLed process. Its `mmu_notifier_invalidate_range_start_nonblock()`
//!    reaches the driver's notifier with a non-blockable range: the driver
//!    must not sleep, and refuses while the buffer is mapped (the call then
//!    fails with EAGAIN and the mm is torn down by exit_mmap as usual).
//!    The test kills a victim with a registered buffer and commands in
//!    flight and calls `process_mrelease` at once, until the
//!    `warpq_invalidate_end` tracepoint shows the driver answered a
//!    non-blockable call (a race with the victim's own exit, so it retries).
//!
//! After all: every pin has come back. A splat (sleeping in atomic
//! context, lockdep) or a leak fails the run through the harness.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::harness::{self, Exit};
use crate::report::Report;
use crate::stream::{push_all, sqe};
use crate::{Anon, PinCounts};
use warpq::sys::*;
use warpq::Device;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const GROUP: &str = "/sys/fs/cgroup/warpq-oom";
const TRACING: &str = "/sys/kernel/tracing";

fn write(path: &str, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("write {value:?} to {path}: {e}"))
}

fn setup_cgroup() -> Result<(), String> {
    if !std::path::Path::new(&format!("{CGROUP_ROOT}/cgroup.controllers")).exists() {
        std::fs::create_dir_all(CGROUP_ROOT).map_err(|e| format!("mkdir {CGROUP_ROOT}: {e}"))?;
        let status = std::process::Command::new("mount")
            .args(["-t", "cgroup2", "none", CGROUP_ROOT])
            .status()
            .map_err(|e| format!("mount cgroup2: {e}"))?;
        if !status.success() {
            return Err("mount -t cgroup2 failed".into());
        }
    }
    write(&format!("{CGROUP_ROOT}/cgroup.subtree_control"), "+memory")?;
    if !std::path::Path::new(GROUP).exists() {
        std::fs::create_dir(GROUP).map_err(|e| format!("mkdir {GROUP}: {e}"))?;
    }
    write(&format!("{GROUP}/memory.max"), &(48 << 20).to_string())
}

fn oom_kills() -> Result<u64, String> {
    let events =
        std::fs::read_to_string(format!("{GROUP}/memory.events")).map_err(|e| format!("memory.events: {e}"))?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ").and_then(|v| v.trim().parse().ok()))
        .ok_or_else(|| "memory.events has no oom_kill".to_string())
}

/// The victim: joins the cgroup, registers, fills its ring, allocates
/// until killed. Returns (the child's exit code) only on failure.
fn victim(dev: &Device) -> i32 {
    let run = || -> Result<(), String> {
        write(&format!("{GROUP}/cgroup.procs"), "0")?;
        let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
        let buf = Anon::new(4 << 20);
        // SAFETY: only raw pointers refer to the buffer; the process dies
        // with it registered.
        unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
            .map_err(|e| format!("register: {e}"))?;
        let cmds: Vec<_> = (0..200).map(|i| sqe(WARPQ_OP_FILL, i, 0, buf.addr(0), buf.len() as u64, i)).collect();
        push_all(&mut q, &cmds)?;
        // Allocate and touch until the memory cgroup's OOM killer fires.
        let mut hog = Vec::new();
        loop {
            let chunk = Anon::new(1 << 20);
            chunk.write(&vec![0x77; 1 << 20]);
            hog.push(chunk);
        }
    };
    if let Err(e) = run() {
        eprintln!("FAIL victim: {e}");
    }
    1
}

fn round(dev: &Device) -> Result<String, String> {
    let kills_before = oom_kills()?;
    // The child uses its own copies and dies (or exits on failure).
    let child = harness::spawn(|| victim(dev)).map_err(|e| format!("fork: {e}"))?;
    let start = Instant::now();
    match child.wait(Duration::from_secs(120)) {
        Exit::Signal(libc::SIGKILL) => {}
        Exit::TimedOut => return Err("the victim was not OOM-killed within 120 s".into()),
        exit => return Err(format!("the victim ended with {exit}, not SIGKILL")),
    }
    let kills = oom_kills()? - kills_before;
    if kills == 0 {
        return Err("the victim died of SIGKILL but the cgroup counts no oom_kill".into());
    }
    Ok(format!("killed after {:.1} s ({kills} oom_kill)", start.elapsed().as_secs_f64()))
}

/// A victim for `process_mrelease`: registered buffer, a ring of FILLs in
/// flight, then it says so through `ready` and spins until killed.
fn spinning_victim(dev: &Device, ready: libc::c_int) -> i32 {
    let run = || -> Result<(), String> {
        let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
        let buf = Anon::new(4 << 20);
        // SAFETY: only raw pointers refer to the buffer; the process dies
        // with it registered.
        unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
            .map_err(|e| format!("register: {e}"))?;
        let cmds: Vec<_> = (0..64).map(|i| sqe(WARPQ_OP_FILL, i, 0, buf.addr(0), buf.len() as u64, i)).collect();
        push_all(&mut q, &cmds)?;
        // SAFETY: one byte to our pipe.
        unsafe { libc::write(ready, b"r".as_ptr().cast(), 1) };
        loop {
            std::hint::spin_loop();
        }
    };
    if let Err(e) = run() {
        eprintln!("FAIL victim: {e}");
    }
    1
}

/// Kills a victim and reaps its mm at once with `process_mrelease`;
/// returns the call's result (0 or an errno).
fn mrelease_round(dev: &Device) -> Result<i32, String> {
    let mut pipe = [0; 2];
    // SAFETY: a fresh pipe.
    if unsafe { libc::pipe(pipe.as_mut_ptr()) } != 0 {
        return Err("pipe".into());
    }
    // The child uses its own copies and is killed.
    let child = harness::spawn(|| spinning_victim(dev, pipe[1]));
    // SAFETY: our copy of the write end.
    unsafe { libc::close(pipe[1]) };
    let child = child.map_err(|e| format!("fork: {e}"))?;
    // SAFETY: a fresh pidfd of our child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.pid(), 0) };
    if pidfd < 0 {
        return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let mut byte = [0u8; 1];
    // SAFETY: reading our pipe; then closing our read end.
    let got = unsafe {
        let got = libc::read(pipe[0], byte.as_mut_ptr().cast(), 1);
        libc::close(pipe[0]);
        got
    };
    let _ = child.kill(libc::SIGKILL);
    // SAFETY: process_mrelease on our child's pidfd.
    let ret = unsafe { libc::syscall(libc::SYS_process_mrelease, std::os::fd::AsRawFd::as_raw_fd(&pidfd), 0) };
    let err = if ret == 0 { 0 } else { std::io::Error::last_os_error().raw_os_error().unwrap_or(-1) };
    let exit = child.wait(Duration::MAX);
    if got != 1 {
        return Err(format!("the victim failed before it was ready ({exit})"));
    }
    if exit != Exit::Signal(libc::SIGKILL) {
        return Err(format!("the victim ended with {exit}, not SIGKILL"));
    }
    Ok(err)
}

/// Counts `warpq_invalidate_end` events by outcome in the trace buffer.
fn outcomes() -> [u64; 5] {
    let mut n = [0; 5];
    let trace = std::fs::read_to_string(format!("{TRACING}/trace")).unwrap_or_default();
    for line in trace.lines().filter(|l| l.contains("warpq_invalidate_end")) {
        if let Some(o) = line
            .split("outcome=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<usize>().ok())
        {
            if o < n.len() {
                n[o] += 1;
            }
        }
    }
    n
}

/// Runs `rounds` memcg OOM kills, then kills with `process_mrelease` until
/// the driver has answered `rounds` non-blockable invalidations; reports a
/// case per round and one for `process_mrelease`, prints what the kernel
/// log and the tracepoint saw, and a `figures:` line.
pub fn run(rounds: u32, report: &mut Report) -> Result<(), String> {
    setup_cgroup()?;
    let _ = write(&format!("{TRACING}/trace"), "");
    write(&format!("{TRACING}/buffer_size_kb"), "4096")?;
    write(&format!("{TRACING}/events/warpq/warpq_invalidate_end/enable"), "1")?;
    let dev = Device::open("/dev/warpq0").map_err(|e| format!("open: {e}"))?;
    for i in 0..rounds {
        report.ok(&format!("oom round {i}"), &round(&dev)?);
    }
    let dmesg = std::process::Command::new("dmesg").output().map_err(|e| format!("dmesg: {e}"))?;
    let log = String::from_utf8_lossy(&dmesg.stdout);
    println!(
        "oom: kernel log: {} memcg OOM kills; the reaper reaped {} and gave up on {} (a victim that exits within 2 s is not reaped)",
        log.matches("Memory cgroup out of memory: Killed process").count(),
        log.matches("oom_reaper: reaped process").count(),
        log.matches("oom_reaper: unable to reap").count()
    );
    let mut results = std::collections::BTreeMap::new();
    let mut refused = 0;
    for attempt in 1..=40 {
        let before = outcomes()[2];
        let err = mrelease_round(&dev)?;
        *results.entry(warpq::errno_name(err).unwrap_or("0")).or_insert(0) += 1;
        refused += outcomes()[2] - before;
        if refused >= rounds as u64 {
            report.ok(
                "process_mrelease",
                &format!("{attempt} kills, results {results:?}; the driver answered {refused} non-blockable invalidations of a mapped buffer"),
            );
            break;
        }
        if attempt == 40 {
            return Err(format!("40 kills + process_mrelease, results {results:?}: the driver saw only {refused} non-blockable invalidations"));
        }
    }
    write(&format!("{TRACING}/events/warpq/warpq_invalidate_end/enable"), "0")?;
    let o = outcomes();
    println!(
        "oom: driver notifier outcomes: {} ignored, {} nothing mapped, {} refused (non-blockable while mapped), {} torn down",
        o[0], o[1], o[2], o[3]
    );
    let took = PinCounts::wait_balanced(Duration::from_secs(10))?;
    println!("oom: pins balanced after {} ms", took.as_millis());
    println!("figures: oom_kills={rounds} refused_nonblocking={}", o[2]);
    Ok(())
}
