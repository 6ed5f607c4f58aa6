//! warpq-invalidate-check: invalidations with commands in flight.
//!
//! `warpq-invalidate-check munmap|fork [DEVICE]`, `warpq-invalidate-check forkstorm [COUNT]`
//!
//! - `munmap`: a registered buffer is unmapped while FILL commands into it
//!   are queued and running. Every command completes, with success (it ran
//!   before) or a fault/abort status; none is lost; the queue counts the
//!   teardown; the queue keeps working afterwards.
//! - `fork`: the parent forks while COPY and FILL commands into its buffer
//!   are in flight. The parent's results land in the parent's pages (checked
//!   byte for byte against a model), while the child writes different data
//!   into its copy of the same buffer at the same time and checks the
//!   device never touches it; the child cannot reach the parent's buffers
//!   through the device; the child then uses the device itself, with its own
//!   queue and registrations, concurrently with the parent, verified too.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::Duration;

use warpq::sys::*;
use warpq::{crc32c, Device, Queue};
use warpq_stress::stream::{push_all, reap, sqe};
use warpq_stress::{recv_fd, send_fd, Anon, Rng};

const PAGE: usize = 4096;




fn munmap_in_flight(dev: &Device) -> Result<String, String> {
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    let pages = 64;
    let mut buf = Anon::new(pages * PAGE);
    let other = Anon::new(16 * PAGE);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffers; `buf` is unmapped
    // under the device on purpose (the point of this test).
    let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), rw) }.map_err(|e| format!("register: {e}"))?;
    // SAFETY: as above.
    let h2 = unsafe { dev.register_raw(other.ptr(), other.len(), rw) }.map_err(|e| format!("register other: {e}"))?;
    let before = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    let n = 240u64;
    let cmds: Vec<_> = (0..n)
        .map(|i| {
            let off = (i as usize * 4 * PAGE) % (buf.len() - 16 * PAGE);
            sqe(WARPQ_OP_FILL, i, 0, buf.addr(off), 16 * PAGE as u64, i & 0xff)
        })
        .collect();
    push_all(&mut q, &cmds[..200])?;
    // Unmap while the engine is in the middle of them: after a few have run.
    let t0 = std::time::Instant::now();
    while q.header().sq_head < 5 && t0.elapsed() < Duration::from_secs(5) {
        std::hint::spin_loop();
    }
    buf.unmap();
    // More after the unmap: they must fault, not touch anything.
    push_all(&mut q, &cmds[200..])?;
    let (mut ok, mut fault, mut aborted) = (0, 0, 0);
    for i in 0..n {
        let c = reap(&mut q)?;
        if c.user_data != i {
            return Err(format!("completion {} out of order (expected {i})", c.user_data));
        }
        match c.status {
            WARPQ_STATUS_OK => ok += 1,
            WARPQ_STATUS_FAULT_UNMAPPED | WARPQ_STATUS_FAULT_UNREGISTERED => fault += 1,
            WARPQ_STATUS_ABORTED => aborted += 1,
            s => return Err(format!("command {i}: unexpected status {s}")),
        }
        if c.status == WARPQ_STATUS_OK && i >= 200 {
            return Err(format!("command {i}, queued after munmap, succeeded"));
        }
    }
    let after = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    if after.teardowns <= before.teardowns {
        return Err("the counters show no teardown".into());
    }
    if after.invalidations_by_event[0] <= before.invalidations_by_event[0] {
        return Err("the counters show no UNMAP invalidation".into());
    }
    let delta = |i: usize| after.commands_by_status[i] - before.commands_by_status[i];
    let counted = (
        delta(WARPQ_STATUS_OK as usize),
        delta(WARPQ_STATUS_FAULT_UNMAPPED as usize) + delta(WARPQ_STATUS_FAULT_UNREGISTERED as usize),
        delta(WARPQ_STATUS_ABORTED as usize),
    );
    if counted != (ok, fault, aborted) {
        return Err(format!("counters by status {counted:?} differ from what the completions said {:?}", (ok, fault, aborted)));
    }
    // The queue still works on the other buffer.
    push_all(&mut q, &[sqe(WARPQ_OP_FILL, 9999, 0, other.addr(0), 4096, 0x5a)])?;
    let c = reap(&mut q)?;
    if c.status != WARPQ_STATUS_OK || other.bytes()[..4096].iter().any(|&b| b != 0x5a) {
        return Err(format!("the queue does not work after the munmap (status {})", c.status));
    }
    dev.unregister(h2).map_err(|e| format!("unregister other: {e}"))?;
    // The dead registration can still be dropped.
    dev.unregister(h).map_err(|e| format!("unregister the unmapped buffer: {e}"))?;
    Ok(format!(
        "{n} commands: {ok} done before the unmap, {fault} faulted, {aborted} aborted; teardowns {} -> {}, rebuilds {} -> {}",
        before.teardowns, after.teardowns, before.rebuilds, after.rebuilds
    ))
}

/// A stream of COPY/FILL/CRC commands into `dst` with the CPU's model of
/// `dst` kept in step; verifies every completion and, at the end, `dst`.
struct Stream<'a> {
    src: &'a Anon,
    src_pattern: Vec<u8>,
    dst: &'a Anon,
    model: Vec<u8>,
    rng: Rng,
    expected: VecDeque<(u64, u32, u64)>,
    next: u64,
    verified: u64,
}

impl<'a> Stream<'a> {
    fn new(src: &'a Anon, dst: &'a Anon, seed: u64) -> Self {
        let src_pattern = src.bytes();
        let model = dst.bytes();
        Stream { src, src_pattern, dst, model, rng: Rng(seed), expected: VecDeque::new(), next: 0, verified: 0 }
    }

    fn push(&mut self, q: &mut Queue<'_>, count: u64) -> Result<(), String> {
        let mut batch = Vec::new();
        for _ in 0..count {
            let len = 1 + self.rng.below(2 * PAGE as u64) as usize;
            let so = self.rng.below((self.src.len() - len) as u64) as usize;
            let d = self.rng.below((self.dst.len() - len) as u64) as usize;
            let id = self.next;
            self.next += 1;
            match self.rng.below(3) {
                0 => {
                    self.model[d..d + len].copy_from_slice(&self.src_pattern[so..so + len]);
                    batch.push(sqe(WARPQ_OP_COPY, id, self.src.addr(so), self.dst.addr(d), len as u64, 0));
                    self.expected.push_back((id, WARPQ_STATUS_OK, len as u64));
                }
                1 => {
                    let v = self.rng.next_u64() as u8;
                    self.model[d..d + len].fill(v);
                    batch.push(sqe(WARPQ_OP_FILL, id, 0, self.dst.addr(d), len as u64, u64::from(v)));
                    self.expected.push_back((id, WARPQ_STATUS_OK, len as u64));
                }
                _ => {
                    let crc = crc32c(0, &self.model[d..d + len]);
                    batch.push(sqe(WARPQ_OP_CRC32C, id, self.dst.addr(d), 0, len as u64, 0));
                    self.expected.push_back((id, WARPQ_STATUS_OK, u64::from(crc)));
                }
            }
        }
        push_all(q, &batch)
    }

    fn reap_all(&mut self, q: &mut Queue<'_>) -> Result<(), String> {
        while let Some((id, status, result)) = self.expected.pop_front() {
            let c = reap(q)?;
            if c.user_data != id || c.status != status || c.result != result {
                return Err(format!(
                    "command {id}: got id {} status {} result {:#x}, expected status {status} result {result:#x}",
                    c.user_data, c.status, c.result
                ));
            }
            self.verified += 1;
        }
        Ok(())
    }

    fn verify_dst(&self, who: &str) -> Result<(), String> {
        let got = self.dst.bytes();
        match got.iter().zip(&self.model).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => Err(format!("{who}: buffer differs from its model at byte {i}")),
        }
    }
}

fn child_main(dev: &Device, src: &Anon, dst: &Anon, parent_dst_model_hint: usize) -> Result<String, String> {
    // 1. Write our own data into our copy of the parent's buffer while the
    //    parent's commands keep running, and check nothing else writes it.
    let mine: Vec<u8> = (0..dst.len()).map(|i| (i as u8) ^ 0xc3).collect();
    dst.write(&mine);
    std::thread::sleep(Duration::from_millis(300));
    if dst.bytes() != mine {
        return Err("child: the device wrote into the child's copy of the buffer".into());
    }
    // 2. Our own queue: the inherited mapping now shows a fresh queue with
    //    no registrations; the parent's buffers are unreachable.
    let mut q = dev.queue().map_err(|e| format!("child: map queue: {e}"))?;
    push_all(&mut q, &[sqe(WARPQ_OP_FILL, 1, 0, dst.addr(0), 64, 0xee)])?;
    let c = reap(&mut q)?;
    if c.status != WARPQ_STATUS_FAULT_UNREGISTERED {
        return Err(format!("child: reached the parent's buffer through the device (status {})", c.status));
    }
    push_all(&mut q, &[sqe(WARPQ_OP_CRC32C, 2, src.addr(0), 0, 64, 0)])?;
    let c = reap(&mut q)?;
    if c.status != WARPQ_STATUS_FAULT_UNREGISTERED {
        return Err(format!("child: read the parent's buffer through the device (status {})", c.status));
    }
    if dst.bytes() != mine {
        return Err("child: a refused command changed the child's buffer".into());
    }
    // 3. Register our own copies and run verified commands of our own,
    //    concurrently with the parent.
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: the child's copies stay mapped until the child exits.
    let hs = unsafe { dev.register_raw(src.ptr(), src.len(), WARPQ_ACCESS_READ) }.map_err(|e| format!("child: register src: {e}"))?;
    // SAFETY: as above.
    let hd = unsafe { dev.register_raw(dst.ptr(), dst.len(), rw) }.map_err(|e| format!("child: register dst: {e}"))?;
    let mut stream = Stream::new(src, dst, 0xc41d + parent_dst_model_hint as u64);
    for _ in 0..4 {
        stream.push(&mut q, 100)?;
        stream.reap_all(&mut q)?;
    }
    stream.verify_dst("child")?;
    dev.unregister(hs).map_err(|e| format!("child: unregister: {e}"))?;
    dev.unregister(hd).map_err(|e| format!("child: unregister: {e}"))?;
    Ok(format!("child: {} own commands verified, its copy untouched by the parent's", stream.verified))
}

fn fork_in_flight(dev: &Device) -> Result<String, String> {
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    let src = Anon::new(256 * PAGE);
    let dst = Anon::new(256 * PAGE);
    let pattern: Vec<u8> = (0..src.len()).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2]).collect();
    src.write(&pattern);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffers; they outlive the
    // registrations.
    let hs = unsafe { dev.register_raw(src.ptr(), src.len(), WARPQ_ACCESS_READ) }.map_err(|e| format!("register src: {e}"))?;
    // SAFETY: as above.
    let hd = unsafe { dev.register_raw(dst.ptr(), dst.len(), rw) }.map_err(|e| format!("register dst: {e}"))?;
    let before = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    let mut stream = Stream::new(&src, &dst, 0x9a7e);
    stream.push(&mut q, 250)?;
    // Fork with those in flight.
    // SAFETY: the child runs `child_main` and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match child_main(dev, &src, &dst, 1) {
            Ok(msg) => {
                println!("ok: {msg}");
                0
            }
            Err(e) => {
                println!("FAIL: {e}");
                1
            }
        };
        // SAFETY: leave the child without unwinding into the parent's state.
        unsafe { libc::_exit(code) };
    }
    if pid < 0 {
        return Err("fork failed".into());
    }
    // The parent keeps going, concurrently with the child.
    stream.push(&mut q, 250)?;
    stream.reap_all(&mut q)?;
    for _ in 0..4 {
        stream.push(&mut q, 100)?;
        stream.reap_all(&mut q)?;
    }
    stream.verify_dst("parent")?;
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("child failed (wait status {status:#x})"));
    }
    // The parent's buffer is still the parent's: the child's writes did not land.
    stream.verify_dst("parent after the child exited")?;
    let after = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    dev.unregister(hs).map_err(|e| format!("unregister: {e}"))?;
    dev.unregister(hd).map_err(|e| format!("unregister: {e}"))?;
    Ok(format!(
        "parent: {} commands verified across fork; invalidations {} -> {}, teardowns {} -> {}, ignored {} -> {}, rebuilds {} -> {}",
        stream.verified, before.invalidations, after.invalidations, before.teardowns, after.teardowns,
        before.ignored_by_policy, after.ignored_by_policy, before.rebuilds, after.rebuilds
    ))
}

/// `count` children in sequence share the parent's file: each gets its own
/// queue, registers its own buffer, verifies a FILL and a CRC through the
/// device, and exits — every tenth after exec'ing (the old mm goes away
/// under the driver). The parent's queue keeps working throughout, and the
/// file's queue directory (64 entries) never fills up.
fn fork_storm(dev: &Device, count: u32) -> Result<String, String> {
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    let mine = Anon::new(4 * PAGE);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffer; it outlives the registration.
    let h = unsafe { dev.register_raw(mine.ptr(), mine.len(), rw) }.map_err(|e| format!("register: {e}"))?;
    let mut execs = 0;
    for i in 0..count {
        let exec = i % 10 == 9;
        // SAFETY: the child only uses its own copies and leaves with _exit or exec.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = (|| -> Result<(), String> {
                let mut cq = dev.queue().map_err(|e| format!("child map: {e}"))?;
                let buf = Anon::new(4 * PAGE);
                // SAFETY: as in the parent.
                let ch = unsafe { dev.register_raw(buf.ptr(), buf.len(), rw) }.map_err(|e| format!("child register: {e}"))?;
                let v = (i % 251) as u8;
                push_all(&mut cq, &[
                    sqe(WARPQ_OP_FILL, 1, 0, buf.addr(0), buf.len() as u64, u64::from(v)),
                    sqe(WARPQ_OP_CRC32C, 2, buf.addr(0), 0, buf.len() as u64, 0),
                ])?;
                let (a, b) = (reap(&mut cq)?, reap(&mut cq)?);
                let want = crc32c(0, &vec![v; buf.len()]);
                if a.status != 0 || b.status != 0 || b.result != u64::from(want) || buf.bytes().iter().any(|&x| x != v) {
                    return Err(format!("child {i}: statuses {} {} crc {:#x}", a.status, b.status, b.result));
                }
                if !exec {
                    dev.unregister(ch).map_err(|e| format!("child unregister: {e}"))?;
                }
                Ok(())
            })();
            if let Err(e) = code {
                println!("FAIL: {e}");
                // SAFETY: leave the child.
                unsafe { libc::_exit(1) };
            }
            if exec {
                // Exec with the registration and queue still live: the old
                // mm's teardown must release them.
                let prog = c"/bin/true";
                let argv = [prog.as_ptr(), std::ptr::null()];
                // SAFETY: valid NUL-terminated argv; on failure fall through.
                unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
                // SAFETY: leave the child.
                unsafe { libc::_exit(3) };
            }
            // SAFETY: leave the child (registration dropped above).
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            return Err(format!("fork {i} failed"));
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(format!("child {i} failed (wait status {status:#x})"));
        }
        if exec {
            execs += 1;
        }
        if i % 16 == 0 {
            // The parent's own queue still works.
            push_all(&mut q, &[sqe(WARPQ_OP_FILL, u64::from(i), 0, mine.addr(0), 64, u64::from(i & 0xff))])?;
            let c = reap(&mut q)?;
            if c.status != 0 || mine.bytes()[0] != (i & 0xff) as u8 {
                return Err(format!("parent's queue after child {i}: status {}", c.status));
            }
        }
    }
    dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
    Ok(format!("{count} children ({execs} exec'd with live registrations), each with its own verified queue"))
}

/// Process death with work in flight: a child with registered buffers and a
/// full ring of long FILLs is SIGKILLed mid-way; another thread's close of
/// the fd while a thread blocks in WAIT. The driver must release every pin
/// (checked afterwards by `warpq-check pins`), leak nothing and not splat.
fn death(dev: &Device) -> Result<String, String> {
    // SAFETY: the child only uses its own copies and is killed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let run = || -> Result<(), String> {
            let mut q = dev.queue().map_err(|e| format!("child map: {e}"))?;
            let buf = Anon::new(4 << 20);
            let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
            // SAFETY: as elsewhere; the process dies with it registered.
            unsafe { dev.register_raw(buf.ptr(), buf.len(), rw) }.map_err(|e| format!("child register: {e}"))?;
            let cmds: Vec<_> = (0..200).map(|i| sqe(WARPQ_OP_FILL, i, 0, buf.addr(0), buf.len() as u64, i)).collect();
            push_all(&mut q, &cmds)?;
            loop {
                std::hint::spin_loop();
            }
        };
        if let Err(e) = run() {
            println!("FAIL: {e}");
        }
        // SAFETY: leave the child.
        unsafe { libc::_exit(1) };
    }
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: our child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !libc::WIFSIGNALED(status) {
        return Err(format!("child was not killed (status {status:#x})"));
    }
    // Close from one thread while another blocks in WAIT on the same file.
    let file = std::fs::OpenOptions::new().read(true).write(true).open("/dev/warpq0").map_err(|e| e.to_string())?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let waiter = std::thread::spawn(move || {
        let mut req = warpq_wait {
            size: std::mem::size_of::<warpq_wait>() as u32,
            min_ready: 1,
            timeout_ns: 2_000_000_000,
            ..Default::default()
        };
        // SAFETY: WAIT reads and writes one warpq_wait.
        let r = unsafe { libc::ioctl(fd, WARPQ_IOC_WAIT, &mut req) };
        (r, req.ready)
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(file);
    let (r, ready) = waiter.join().map_err(|_| "waiter panicked")?;
    if r != 0 || ready != 0 {
        return Err(format!("WAIT after a concurrent close returned {r} with {ready} ready"));
    }
    Ok("SIGKILL with 200 long commands in flight; close while another thread waits: WAIT timed out cleanly".into())
}

/// The fd passed to another process with SCM_RIGHTS: that process gets a
/// queue of its own on the same open file and cannot reach the first one's
/// buffers through the device.
fn scm_rights(dev: &Device) -> Result<String, String> {
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    let buf = Anon::new(4 * PAGE);
    buf.write(&[0x11u8; 4 * PAGE]);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffer while registered.
    let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), rw) }.map_err(|e| format!("register: {e}"))?;
    push_all(&mut q, &[sqe(WARPQ_OP_FILL, 1, 0, buf.addr(0), 64, 0x22)])?;
    if reap(&mut q)?.status != WARPQ_STATUS_OK {
        return Err("the owner's FILL failed".into());
    }
    let mut sv = [0; 2];
    // SAFETY: a socketpair for passing the fd.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) } != 0 {
        return Err("socketpair failed".into());
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(dev.as_file());
    // SAFETY: the child only uses the received fd and its own memory.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // The receiver: drop the inherited fd so the only way in is the
        // one received over the socket.
        // SAFETY: closing our copy of the inherited descriptor.
        unsafe { libc::close(fd) };
        let code = (|| -> Result<(), String> {
            let received = recv_fd(sv[1]).ok_or("no fd received")?;
            // SAFETY: `received` is a descriptor the kernel just installed
            // for us; nothing else owns it.
            let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(received) };
            let dev2 = Device::from_fd(owned).map_err(|e| format!("received fd: {e}"))?;
            let mut q2 = dev2.queue().map_err(|e| format!("receiver queue: {e}"))?;
            for (id, s) in [
                (1, sqe(WARPQ_OP_FILL, 1, 0, buf.addr(0), 64, 0x33)),
                (2, sqe(WARPQ_OP_CRC32C, 2, buf.addr(0), 0, 64, 0)),
            ] {
                push_all(&mut q2, &[s])?;
                let c = reap(&mut q2)?;
                if c.user_data != id || c.status != WARPQ_STATUS_FAULT_UNREGISTERED {
                    return Err(format!("receiver reached the owner's buffer (status {})", c.status));
                }
            }
            Ok(())
        })();
        if let Err(e) = code {
            println!("FAIL: {e}");
            // SAFETY: leave the child.
            unsafe { libc::_exit(1) };
        }
        // SAFETY: leave the child.
        unsafe { libc::_exit(0) };
    }
    if !send_fd(sv[0], fd) {
        return Err("sendmsg SCM_RIGHTS failed".into());
    }
    let mut status = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    // SAFETY: our sockets.
    unsafe {
        libc::close(sv[0]);
        libc::close(sv[1]);
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("receiver failed (wait status {status:#x})"));
    }
    if buf.bytes()[..64].iter().any(|&b| b != 0x22) {
        return Err("the owner's buffer changed".into());
    }
    dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
    Ok("fd passed with SCM_RIGHTS: the receiver's FILL and CRC at the owner's buffer complete FAULT_UNREGISTERED; the buffer is unchanged".into())
}

/// A teardown zaps the ring's user mappings, so the process's next plain
/// touch of the ring faults and the fault handler rebuilds the queue: a
/// process that drives its queue through the ring alone needs no system call
/// to recover from an invalidation.
fn touch_rebuilds(dev: &Device) -> Result<String, String> {
    let ring = dev.map_queue().map_err(|e| format!("map queue: {e}"))?;
    let hdr = ring.as_ptr() as *const warpq_ring_header;
    let buf = Anon::new(16 * PAGE);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffer while registered.
    let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), rw) }.map_err(|e| format!("register: {e}"))?;
    // SAFETY: the ring stays mapped while `ring` lives; volatile reads of
    // header fields (this one maps the page).
    let magic = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*hdr).magic)) };
    if magic != WARPQ_RING_MAGIC {
        return Err(format!("ring magic {magic:#x}"));
    }
    let before = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    // SAFETY: our own mapping; the registration survives (torn down).
    unsafe { libc::madvise(buf.ptr().add(PAGE).cast(), PAGE, libc::MADV_DONTNEED) };
    // The zap runs as deferred work: give it time before the touch.
    std::thread::sleep(Duration::from_millis(300));
    let mid = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    // SAFETY: as above; this touch must fault and rebuild first.
    let flags = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*hdr).flags)) };
    let after = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
    if after.faults <= mid.faults || after.rebuilds <= mid.rebuilds || flags & WARPQ_RING_STALE != 0 {
        return Err(format!(
            "the first touch of the ring after a teardown did not rebuild: faults {} -> {}, rebuilds {} -> {}, flags {flags:#x}",
            mid.faults, after.faults, mid.rebuilds, after.rebuilds
        ));
    }
    if mid.teardowns != before.teardowns + 1 || mid.zaps <= before.zaps {
        return Err(format!("DONTNEED of a registered page: teardowns {} -> {}, zaps {} -> {}", before.teardowns, mid.teardowns, before.zaps, mid.zaps));
    }
    Ok(format!(
        "a teardown zapped the ring ({} zap); the next plain read of it faulted and rebuilt the queue (rebuilds {} -> {}), no system call",
        mid.zaps - before.zaps,
        mid.rebuilds,
        after.rebuilds
    ))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_default();
    let path = if what == "forkstorm" { "/dev/warpq0".into() } else { args.next().unwrap_or_else(|| "/dev/warpq0".into()) };
    let dev = match Device::open(&path) {
        Ok(d) => d,
        Err(e) => {
            println!("FAIL: open {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match what.as_str() {
        "munmap" => munmap_in_flight(&dev),
        "fork" => fork_in_flight(&dev),
        "death" => death(&dev),
        "scm" => scm_rights(&dev),
        "touch" => touch_rebuilds(&dev),
        "forkstorm" => fork_storm(&dev, args.next().and_then(|n| n.parse().ok()).unwrap_or(200)),
        _ => {
            eprintln!("usage: warpq-invalidate-check munmap|fork|death|scm|touch [DEVICE] | forkstorm [COUNT]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(msg) => {
            println!("ok: {what}: {msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("FAIL: {what}: {e}");
            ExitCode::FAILURE
        }
    }
}
