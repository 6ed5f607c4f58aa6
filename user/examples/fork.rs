//! Parent and child both use the device after fork, each verified.
//!
//! `fork [DEVICE]` (default `/dev/warpq0`):
//!
//! - the parent registers a buffer and runs commands, then forks while
//!   commands into that buffer are in flight;
//! - the child finds that the parent's `Queue` refuses to work in it, with
//!   an error saying what to do (no hang, nothing touched); gets its own
//!   queue with `Device::queue()`; checks that the parent's buffer is not
//!   reachable through it; registers its own buffer and runs verified
//!   commands;
//! - meanwhile the parent keeps using its queue with no action of its own,
//!   verifies its results, and checks the child's exit status.
//!
//! Exit status 1 if anything does not verify, in either process.

use std::process::ExitCode;

use warpq::{opcode, Access, Device, Entry, ErrorKind, Queue, RegisteredBuffer, Status};

const LEN: usize = 256 * 1024;

/// Runs `entries` to completion; returns (status, result) per entry, in order.
fn run(q: &mut Queue<'_>, entries: &[Entry]) -> Result<Vec<(Status, u64)>, String> {
    let mut out = Vec::new();
    let mut next = 0;
    while out.len() < entries.len() {
        {
            let mut sq = q.submission();
            while next < entries.len() && sq.push(&entries[next]).is_ok() {
                next += 1;
            }
        }
        q.submit_and_wait(1).map_err(|e| e.to_string())?;
        for c in q.completion() {
            if c.user_data() != out.len() as u64 {
                return Err(format!("completion {} where {} was expected", c.user_data(), out.len()));
            }
            out.push((c.status(), c.result()));
        }
    }
    Ok(out)
}

/// FILL the buffer with `byte` in 16 commands, then CRC it; verifies the
/// statuses, the CRC and every byte.
fn fill_and_check(q: &mut Queue<'_>, buf: &RegisteredBuffer<'_>, byte: u8, who: &str) -> Result<(), String> {
    let piece = LEN / 16;
    let mut cmds: Vec<Entry> =
        (0..16).map(|i| opcode::Fill::new(buf.addr_at(i * piece), piece as u64, byte).build()).collect();
    cmds.push(opcode::Crc32c::new(buf.addr(), LEN as u64).build());
    let cmds: Vec<Entry> = cmds.into_iter().enumerate().map(|(i, e)| e.user_data(i as u64)).collect();
    let done = run(q, &cmds)?;
    for (i, (s, r)) in done.iter().enumerate().take(16) {
        if *s != Status::Ok || *r != piece as u64 {
            return Err(format!("{who}: FILL {i}: {s}, result {r}"));
        }
    }
    let want = vec![byte; LEN];
    let (s, crc) = done[16];
    if s != Status::Ok || crc != u64::from(warpq::crc32c(0, &want)) {
        return Err(format!("{who}: CRC32C: {s}, {crc:#x} (expected {:#x})", warpq::crc32c(0, &want)));
    }
    if buf.to_vec() != want {
        return Err(format!("{who}: the buffer is not all {byte:#x}"));
    }
    Ok(())
}

fn child(
    dev: &Device,
    old: &mut Queue<'_>,
    parents: &RegisteredBuffer<'_>,
    parent_owner: u64,
) -> Result<String, String> {
    // The parent's queue value refuses to work here, and says why.
    let e = old.submit().expect_err("the parent's Queue must refuse to submit in the child");
    if e.kind() != ErrorKind::Forked {
        return Err(format!("child: expected a Forked error, got {e}"));
    }
    println!("fork: child: the inherited Queue says: {e}");
    match old.wait(1, None) {
        Err(e) if e.kind() == ErrorKind::Forked => {}
        other => return Err(format!("child: WAIT on the inherited Queue: {other:?}")),
    }
    // Our copy of the parent's buffer: what it held at fork (some of the
    // parent's in-flight FILLs may have landed before the fork), and from
    // now on never written by the device.
    let snapshot = parents.to_vec();
    // A queue of our own.
    let mut q = dev.queue().map_err(|e| format!("child: queue: {e}"))?;
    if q.owner_id() == parent_owner {
        return Err("child: got the parent's queue".into());
    }
    // The parent's buffer address is not registered for us.
    let probe = opcode::Fill::new(parents.addr(), 64, 0xee).build().user_data(0);
    let done = run(&mut q, &[probe])?;
    if done[0].0 != Status::FaultUnregistered {
        return Err(format!("child: the parent's buffer was reachable: {}", done[0].0));
    }
    // Our own buffer and commands, verified, while the parent runs its own.
    let mine = dev.alloc(LEN, Access::ReadWrite).map_err(|e| format!("child: alloc: {e}"))?;
    for round in 0..8u8 {
        fill_and_check(&mut q, &mine, 0xc0 + round, "child")?;
    }
    if parents.to_vec() != snapshot {
        return Err("child: the device wrote into the child's copy of the parent's buffer".into());
    }
    Ok(format!("child: own queue {:#x}, 8 rounds of 17 commands verified; parent's buffer unreachable", q.owner_id()))
}

fn main_() -> Result<String, String> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/warpq0".into());
    let dev = Device::open(&path).map_err(|e| e.to_string())?;
    let mut q = dev.queue().map_err(|e| e.to_string())?;
    let buf = dev.alloc(LEN, Access::ReadWrite).map_err(|e| e.to_string())?;
    fill_and_check(&mut q, &buf, 0x11, "parent")?;
    let owner = q.owner_id();

    // Commands in flight across the fork.
    {
        let mut sq = q.submission();
        for i in 0..64 {
            sq.push(&opcode::Fill::new(buf.addr_at(i * 4096), 4096, 0x22).build().user_data(i as u64))
                .map_err(|e| e.to_string())?;
        }
    }
    q.submit().map_err(|e| e.to_string())?;

    // SAFETY: the child runs `child` and leaves with exit; it uses only its
    // copies of our values, and the device through its own queue.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let code = match child(&dev, &mut q, &buf, owner) {
            Ok(msg) => {
                println!("fork: {msg}");
                0
            }
            Err(e) => {
                println!("fork: FAIL: {e}");
                1
            }
        };
        std::process::exit(code);
    }

    // The parent: reap the in-flight FILLs, then keep working, concurrently
    // with the child.
    let mut reaped = 0;
    while reaped < 64 {
        q.submit_and_wait(1).map_err(|e| format!("parent: {e}"))?;
        for c in q.completion() {
            if c.user_data() != reaped || c.status() != Status::Ok {
                return Err(format!("parent: in-flight FILL: {c:?}"));
            }
            reaped += 1;
        }
    }
    if buf.to_vec()[..64 * 4096].iter().any(|&b| b != 0x22) {
        return Err("parent: the FILLs in flight at fork did not land in the parent's buffer".into());
    }
    for round in 0..8u8 {
        fill_and_check(&mut q, &buf, 0x30 + round, "parent")?;
    }
    let mut status = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("the child failed (wait status {status:#x})"));
    }
    if buf.to_vec().iter().any(|&b| b != 0x37) {
        return Err("parent: the buffer changed after the parent's last round".into());
    }
    Ok(format!("parent: queue {owner:#x} kept working across fork, 64 in-flight + 8 rounds verified; child ok"))
}

fn main() -> ExitCode {
    match main_() {
        Ok(msg) => {
            println!("fork: ok: {msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("fork: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
