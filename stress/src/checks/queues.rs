//! `warpq-user-check queues`: the debugfs queue list through
//! `warpqctl queues --json`, against a workload with known numbers: three
//! processes, five regions of known sizes and rights. Every queue, region,
//! address and byte count the tool prints must be the workload's; once the
//! processes are gone, so are their queues.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use warpq::{Access, Device};

use crate::harness;
use crate::plot::json::{Json, Parser};
use crate::report::Report;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

/// The workload: per process, its regions' sizes and rights.
const PLAN: [&[(usize, Access)]; 3] = [
    &[(64 << 10, Access::ReadWrite)],
    &[(128 << 10, Access::Write), (256 << 10, Access::Read)],
    &[(1 << 20, Access::ReadWrite), (2 << 20, Access::Read)],
];

fn access_word(a: Access) -> &'static str {
    match a {
        Access::Read => "r",
        Access::Write => "w",
        Access::ReadWrite => "rw",
    }
}

fn pipe() -> Result<(std::fs::File, std::fs::File), String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    ensure!(rc == 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: two fresh descriptors, each owned once.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((r.into(), w.into()))
}

/// In the child: open the device, register the plan's regions, report
/// their addresses on `ready`, wait for a byte on `go`, exit.
fn child_main(path: &str, plan: &[(usize, Access)], mut ready: std::fs::File, mut go: std::fs::File) -> i32 {
    let mut run = || -> Result<(), String> {
        let dev = Device::open(path).map_err(|e| e.to_string())?;
        let mut held = Vec::new();
        let mut line = String::new();
        for &(len, access) in plan {
            let b = dev.alloc(len, access).map_err(|e| format!("register {len} bytes: {e}"))?;
            line.push_str(&format!("{} ", b.addr()));
            held.push(b);
        }
        line.push('\n');
        ready.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        let _ = go.read(&mut byte);
        drop(held);
        Ok(())
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            let _ = ready.write_all(format!("error {e}\n").as_bytes());
            1
        }
    }
}

fn warpqctl_json(device: &str) -> Result<Json, String> {
    let out = std::process::Command::new("warpqctl")
        .args(["queues", "--json", device])
        .output()
        .map_err(|e| format!("run warpqctl: {e}"))?;
    ensure!(out.status.success(), "warpqctl queues --json: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Parser::parse(&text).map_err(|e| format!("warpqctl's JSON: {e}: {text}"))
}

/// The check (an `ok` line of `r`).
pub fn queues(r: &mut Report, path: &str) -> Result<(), String> {
    let device = path.trim_start_matches("/dev/");
    let backing = std::fs::read_to_string("/sys/module/warpq/parameters/backing")
        .map_err(|e| format!("backing parameter: {e}"))?
        .trim()
        .to_string();
    let before = warpqctl_json(device)?;
    ensure!(before.get(device).is_some_and(|q| q.arr().is_empty()), "queues before the workload started: {before:?}");
    let mut kids = Vec::new();
    for plan in PLAN {
        let (ready_r, ready_w) = pipe()?;
        let (go_r, go_w) = pipe()?;
        // The child gets its ends; the parent keeps (and drops) the others.
        let mut ends = Some((ready_w, go_r));
        let child = harness::spawn(|| {
            let (ready_w, go_r) = ends.take().expect("the child's pipe ends");
            child_main(path, plan, ready_w, go_r)
        })
        .map_err(|e| format!("fork: {e}"))?;
        drop(ends);
        kids.push((child, plan, ready_r, go_w));
    }
    let mut addrs: Vec<Vec<u64>> = Vec::new();
    let mut failed = None;
    for (child, _, ready, _) in kids.iter_mut() {
        let mut line = String::new();
        let mut byte = [0u8; 1];
        while ready.read(&mut byte).map_err(|e| e.to_string())? == 1 && byte[0] != b'\n' {
            line.push(byte[0] as char);
        }
        if line.starts_with("error") || line.is_empty() {
            failed.get_or_insert(format!("process {}: {line}", child.pid()));
        }
        addrs.push(line.split_whitespace().filter_map(|a| a.parse().ok()).collect());
    }
    let listed = warpqctl_json(device);
    // Let the children go before judging, so that a failure leaves nothing.
    let pids: Vec<i32> = kids.iter().map(|(child, ..)| child.pid()).collect();
    let plans: Vec<&[(usize, Access)]> = kids.iter().map(|&(_, plan, ..)| plan).collect();
    for (child, _, _, mut go) in kids {
        let _ = go.write_all(b"x");
        let pid = child.pid();
        let exit = child.wait(Duration::from_secs(30));
        ensure!(exit.success(), "process {pid}: {exit}");
    }
    if let Some(f) = failed {
        return Err(f);
    }
    let listed = listed?;
    let queues = listed.get(device).map(Json::arr).unwrap_or(&[]);
    ensure!(
        queues.len() == PLAN.len(),
        "warpqctl lists {} queues for {} processes: {listed:?}",
        queues.len(),
        PLAN.len()
    );
    let (mut regions, mut bytes) = (0, 0u64);
    for ((pid, plan), addrs) in pids.iter().zip(&plans).zip(&addrs) {
        let q = queues
            .iter()
            .find(|q| q.get("pid").and_then(Json::num) == Some(f64::from(*pid)))
            .ok_or_else(|| format!("no queue of process {pid} in {listed:?}"))?;
        let num = |k: &str| q.get(k).and_then(Json::num).map(|v| v as u64);
        let word = |k: &str| q.get(k).and_then(Json::str).unwrap_or("-");
        let total: u64 = plan.iter().map(|&(len, _)| len as u64).sum();
        let pinned = if backing == "pin" { total } else { 0 };
        ensure!(word("comm") == "warpq-user-chec", "process {pid}: comm {:?}", word("comm"));
        ensure!(word("backing") == backing && word("state") == "running", "process {pid}: {q:?}");
        ensure!(
            num("region_count") == Some(plan.len() as u64),
            "process {pid}: region_count {:?}",
            num("region_count")
        );
        ensure!(
            num("registered_bytes") == Some(total),
            "process {pid}: registered_bytes {:?} != {total}",
            num("registered_bytes")
        );
        ensure!(num("mapped_bytes") == Some(total), "process {pid}: mapped_bytes {:?} != {total}", num("mapped_bytes"));
        ensure!(
            num("pinned_bytes") == Some(pinned),
            "process {pid}: pinned_bytes {:?} != {pinned}",
            num("pinned_bytes")
        );
        let listed_regions = q.get("regions").map(Json::arr).unwrap_or(&[]);
        ensure!(listed_regions.len() == plan.len(), "process {pid}: {} region entries", listed_regions.len());
        for (&(len, access), &addr) in plan.iter().zip(addrs) {
            let reg = listed_regions
                .iter()
                .find(|x| x.get("addr").and_then(Json::num) == Some(addr as f64))
                .ok_or_else(|| format!("process {pid}: no region at {addr:#x}"))?;
            let rn = |k: &str| reg.get(k).and_then(Json::num).map(|v| v as u64);
            let rw = |k: &str| reg.get(k).and_then(Json::str).unwrap_or("-");
            ensure!(rn("len") == Some(len as u64) && rn("mapped_bytes") == Some(len as u64), "process {pid}: {reg:?}");
            ensure!(rw("access") == access_word(access) && rw("state") == "mapped", "process {pid}: {reg:?}");
            ensure!(rn("mapped_chunks") == rn("chunks") && rn("dead_chunks") == Some(0), "process {pid}: {reg:?}");
            regions += 1;
            bytes += len as u64;
        }
    }
    let after = warpqctl_json(device)?;
    ensure!(after.get(device).is_some_and(|q| q.arr().is_empty()), "queues left after the processes exited: {after:?}");
    r.ok(
        "warpqctl queues --json",
        &format!(
            "3 processes, {regions} regions, {} KiB: every pid, comm, region address, length, right, chunk count and \
             registered/mapped/pinned byte count as the workload made them ({backing} backing); none left after exit",
            bytes >> 10
        ),
    );
    Ok(())
}
