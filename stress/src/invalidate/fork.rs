//! Fork with commands in flight, and a storm of children on the parent's
//! file.

use std::collections::VecDeque;
use std::time::Duration;

use warpq::sys::*;
use warpq::{crc32c, Device, Queue};

use super::{CHILD_LIMIT, PAGE};
use crate::harness;
use crate::report::Report;
use crate::stream::{push_all, reap, sqe};
use crate::{Anon, Rng};

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
    let hs = unsafe { dev.register_raw(src.ptr(), src.len(), WARPQ_ACCESS_READ) }
        .map_err(|e| format!("child: register src: {e}"))?;
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

/// The parent forks while COPY and FILL commands into its buffer are in
/// flight. The parent's results land in the parent's pages (checked byte for
/// byte against a model), while the child writes different data into its
/// copy of the same buffer at the same time and checks the device never
/// touches it; the child cannot reach the parent's buffers through the
/// device; the child then uses the device itself, with its own queue and
/// registrations, concurrently with the parent, verified too.
pub fn fork_in_flight(dev: &Device) -> Result<String, String> {
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    let src = Anon::new(256 * PAGE);
    let dst = Anon::new(256 * PAGE);
    let pattern: Vec<u8> = (0..src.len()).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2]).collect();
    src.write(&pattern);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffers; they outlive the
    // registrations.
    let hs = unsafe { dev.register_raw(src.ptr(), src.len(), WARPQ_ACCESS_READ) }
        .map_err(|e| format!("register src: {e}"))?;
    // SAFETY: as above.
    let hd = unsafe { dev.register_raw(dst.ptr(), dst.len(), rw) }.map_err(|e| format!("register dst: {e}"))?;
    let before = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    let mut stream = Stream::new(&src, &dst, 0x9a7e);
    stream.push(&mut q, 250)?;
    // Fork with those in flight; the child reports its own line.
    let child = harness::spawn(|| {
        let passed = Report::new().record("fork", &child_main(dev, &src, &dst, 1));
        i32::from(!passed)
    })
    .map_err(|e| format!("fork failed: {e}"))?;
    // The parent keeps going, concurrently with the child.
    stream.push(&mut q, 250)?;
    stream.reap_all(&mut q)?;
    for _ in 0..4 {
        stream.push(&mut q, 100)?;
        stream.reap_all(&mut q)?;
    }
    stream.verify_dst("parent")?;
    let exit = child.wait(CHILD_LIMIT);
    if !exit.success() {
        return Err(format!("child failed ({exit})"));
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
pub fn fork_storm(dev: &Device, count: u32) -> Result<String, String> {
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    let mine = Anon::new(4 * PAGE);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffer; it outlives the registration.
    let h = unsafe { dev.register_raw(mine.ptr(), mine.len(), rw) }.map_err(|e| format!("register: {e}"))?;
    let mut execs = 0;
    for i in 0..count {
        let exec = i % 10 == 9;
        // The child only uses its own copies and leaves with exit or exec.
        let child = harness::spawn(|| {
            let code = (|| -> Result<(), String> {
                let mut cq = dev.queue().map_err(|e| format!("child map: {e}"))?;
                let buf = Anon::new(4 * PAGE);
                // SAFETY: as in the parent.
                let ch = unsafe { dev.register_raw(buf.ptr(), buf.len(), rw) }
                    .map_err(|e| format!("child register: {e}"))?;
                let v = (i % 251) as u8;
                push_all(
                    &mut cq,
                    &[
                        sqe(WARPQ_OP_FILL, 1, 0, buf.addr(0), buf.len() as u64, u64::from(v)),
                        sqe(WARPQ_OP_CRC32C, 2, buf.addr(0), 0, buf.len() as u64, 0),
                    ],
                )?;
                let (a, b) = (reap(&mut cq)?, reap(&mut cq)?);
                let want = crc32c(0, &vec![v; buf.len()]);
                if a.status != 0 || b.status != 0 || b.result != u64::from(want) || buf.bytes().iter().any(|&x| x != v)
                {
                    return Err(format!("child {i}: statuses {} {} crc {:#x}", a.status, b.status, b.result));
                }
                if !exec {
                    dev.unregister(ch).map_err(|e| format!("child unregister: {e}"))?;
                }
                Ok(())
            })();
            if let Err(e) = code {
                Report::new().fail("forkstorm", &e);
                return 1;
            }
            if exec {
                // Exec with the registration and queue still live: the old
                // mm's teardown must release them.
                let prog = c"/bin/true";
                let argv = [prog.as_ptr(), std::ptr::null()];
                // SAFETY: valid NUL-terminated argv; on failure fall through.
                unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
                return 3;
            }
            // The registration was dropped above.
            0
        })
        .map_err(|e| format!("fork {i} failed: {e}"))?;
        let exit = child.wait(CHILD_LIMIT);
        if !exit.success() {
            return Err(format!("child {i} failed ({exit})"));
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
