//! `warpq-user-check accounting`: a queue's kernel memory (its 36 KiB ring
//! and its region table) is charged to the memory cgroup of the process
//! that creates it. A child in a fresh cgroup opens 64 files and makes a
//! queue on each; the cgroup's `vmalloc` (and `memory.current`) must grow
//! by at least the 64 rings.

use std::time::Duration;

use warpq::sys::*;
use warpq::Device;

use crate::harness;
use crate::report::Report;
use crate::Anon;

const ROOT: &str = "/sys/fs/cgroup";
const GROUP: &str = "/sys/fs/cgroup/warpq-acct";
const QUEUES: usize = 64;

fn write(path: &str, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("write {value:?} to {path}: {e}"))
}

/// cgroup2 mounted, the memory controller on for children, our group made.
fn setup() -> Result<(), String> {
    if !std::path::Path::new(&format!("{ROOT}/cgroup.controllers")).exists() {
        std::fs::create_dir_all(ROOT).map_err(|e| format!("mkdir {ROOT}: {e}"))?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "cgroup2", "none", ROOT])
            .status()
            .map_err(|e| format!("mount cgroup2: {e}"))?
            .success();
        if !ok {
            return Err("mount -t cgroup2 failed".into());
        }
    }
    write(&format!("{ROOT}/cgroup.subtree_control"), "+memory")?;
    if !std::path::Path::new(GROUP).exists() {
        std::fs::create_dir(GROUP).map_err(|e| format!("mkdir {GROUP}: {e}"))?;
    }
    Ok(())
}

/// `vmalloc` of the group's memory.stat and its memory.current, in bytes.
fn usage() -> Result<(u64, u64), String> {
    let stat = std::fs::read_to_string(format!("{GROUP}/memory.stat")).map_err(|e| format!("memory.stat: {e}"))?;
    let vmalloc = stat
        .lines()
        .find_map(|l| l.strip_prefix("vmalloc ").and_then(|v| v.trim().parse().ok()))
        .ok_or("memory.stat has no vmalloc line")?;
    let current = std::fs::read_to_string(format!("{GROUP}/memory.current"))
        .map_err(|e| format!("memory.current: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("memory.current: {e}"))?;
    Ok((vmalloc, current))
}

/// In the child: join the group, make the queues, report the growth on
/// `out` as "vmalloc current".
fn child(path: &str, out: &mut std::fs::File) -> Result<(), String> {
    use std::io::Write;
    write(&format!("{GROUP}/cgroup.procs"), "0")?;
    // Everything but the queues first: the buffer (touched), the files.
    let buf = Anon::new(4096);
    buf.write(&[1]);
    let devs: Vec<Device> =
        (0..QUEUES).map(|_| Device::open(path).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    let (v0, c0) = usage()?;
    let mut handles = Vec::new();
    for dev in &devs {
        // SAFETY: the buffer outlives the registrations (the files close at
        // exit, after this returns).
        let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ) }
            .map_err(|e| format!("register (a queue's first ioctl makes it): {e}"))?;
        handles.push(h);
    }
    let (v1, c1) = usage()?;
    writeln!(out, "{} {}", v1.saturating_sub(v0), c1.saturating_sub(c0)).map_err(|e| e.to_string())?;
    for (dev, h) in devs.iter().zip(handles) {
        dev.unregister(h).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The check (an `ok` line of `r`).
pub fn accounting(r: &mut Report, path: &str) -> Result<(), String> {
    use std::io::Read;
    setup()?;
    let (mut rd, mut wr) = {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
        }
        use std::os::fd::FromRawFd;
        // SAFETY: two fresh descriptors, each owned once.
        unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) }
    };
    let kid = harness::spawn(|| match child(path, &mut wr) {
        Ok(()) => 0,
        Err(e) => {
            println!("accounting child: {e}");
            1
        }
    })
    .map_err(|e| format!("fork: {e}"))?;
    drop(wr);
    let exit = kid.wait(Duration::from_secs(60));
    let mut text = String::new();
    let _ = rd.read_to_string(&mut text);
    let _ = std::fs::remove_dir(GROUP);
    if !exit.success() {
        return Err(format!("the child: {exit}"));
    }
    let mut it = text.split_whitespace().filter_map(|v| v.parse::<u64>().ok());
    let (Some(vmalloc), Some(current)) = (it.next(), it.next()) else {
        return Err(format!("the child reported {text:?}"));
    };
    let rings = (QUEUES * WARPQ_RING_SIZE) as u64;
    if vmalloc < rings || current < rings {
        return Err(format!(
            "{QUEUES} queues grew their memory cgroup by {vmalloc} bytes of vmalloc and {current} of memory.current: \
             their rings alone are {rings}"
        ));
    }
    r.ok(
        "queue memory charged to the creator's memory cgroup",
        &format!(
            "{QUEUES} queues: vmalloc +{} KiB, memory.current +{} KiB (rings alone {} KiB)",
            vmalloc >> 10,
            current >> 10,
            rings >> 10
        ),
    );
    Ok(())
}
