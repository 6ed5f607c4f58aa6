//! Processes: fork (through the harness), what a child does with what it
//! inherited, how it leaves, reaping children, and the end of a run.

use std::sync::atomic::Ordering;
use std::time::Instant;

use warpq::sys::*;

use super::super::model::{Kid, World};
use super::super::op::{ChildEnd, Op, Place};
use super::super::oracle::{check, Expect, E_UNREGISTER};
use super::super::run::{CUR_ACT, CUR_SEED, CUR_STEP, IN_CHILD, QUIET};
use super::super::sys::sys_munmap;
use super::super::{Res, CHILD_LIMIT, H_CQ_HEAD, H_CQ_TAIL, H_SQ_HEAD, H_SQ_TAIL, MAX_CHILDREN, MAX_CMD, WIN_SLOTS};
use crate::harness::{self, Exit};

impl World<'_> {
    pub(super) fn fork_child(&mut self, tag: u32, end: ChildEnd, ops: &[Op]) -> Res {
        if self.child || self.children.len() >= MAX_CHILDREN {
            return Ok(());
        }
        let this = &mut *self;
        let spawned = harness::spawn(|| {
            IN_CHILD.store(true, Ordering::SeqCst);
            match this.become_child(tag).and_then(|()| this.child_main(ops, end)) {
                Ok(()) => 0,
                Err(e) => {
                    if !QUIET.load(Ordering::Relaxed) {
                        println!(
                            "fuzz: seed {:#018x} child (pid {}) step {} ({}) FAILED: {e}\n  the child's last steps:{}",
                            CUR_SEED.load(Ordering::Relaxed),
                            std::process::id(),
                            this.step,
                            Op::NAMES[CUR_ACT.load(Ordering::Relaxed) as usize % Op::NAMES.len()],
                            this.history_text()
                        );
                    }
                    1
                }
            }
        });
        let child = spawned.map_err(|e| format!("fork: {e}"))?;
        self.n.forks += 1;
        self.log(format!("  child {}", child.pid()));
        self.children.push(Kid { child, started: Instant::now() });
        for f in &mut self.files {
            f.inherited = true;
        }
        for b in &mut self.bufs {
            if b.shared {
                b.known.fill(false);
            }
        }
        Ok(())
    }

    /// Turns the parent's state into the child's: same files, mappings and
    /// buffers (private ones are copies), no registrations, fresh queues.
    fn become_child(&mut self, tag: u32) -> Res {
        let quiet: Vec<bool> = self.bufs.iter().map(|b| self.quiet(b.addr, b.len as u64)).collect();
        for (b, q) in self.bufs.iter_mut().zip(quiet) {
            if b.shared || !q {
                b.known.fill(false);
            }
        }
        self.child = true;
        self.history.clear();
        // The parent's children are not this process's (the parent reaps
        // them; dropping a `Child` neither waits nor signals).
        self.children.clear();
        self.zombies.clear();
        self.tag = u64::from(tag);
        self.next_ud = 1;
        for f in &mut self.files {
            f.foreign_handles = f.regs.iter().map(|r| r.handle).chain(f.dead_handles.drain(..)).collect();
            f.regs.clear();
            f.known.clear();
            f.fifo.clear();
            f.garbage = false;
            f.c_off = Some(0);
            f.tail = Some(0);
            f.honest = true;
            f.parent_owner = f.owner.take();
            f.inherited = false;
        }
        // The first touch of an inherited ring must show a fresh queue.
        for fi in 0..self.files.len() {
            if let Some(h) = self.files[fi].read_ring() {
                let id = self.files[fi].id;
                let idx = (h.load(H_SQ_HEAD), h.load(H_SQ_TAIL), h.load(H_CQ_HEAD), h.load(H_CQ_TAIL));
                if idx != (0, 0, 0, 0) {
                    let (sh, st, ch, ct) = idx;
                    return Err(format!("file {id}: the child's first look at the ring shows indices {sh}/{st}/{ch}/{ct}, not a fresh queue"));
                }
                self.check_header(fi, h)?;
            }
        }
        Ok(())
    }

    /// A child's operations, then its end.
    fn child_main(&mut self, ops: &[Op], end: ChildEnd) -> Res {
        for (s, op) in ops.iter().enumerate() {
            self.step = s as u64;
            CUR_STEP.store(s as u64, Ordering::Relaxed);
            CUR_ACT.store(op.kind() as u32, Ordering::Relaxed);
            self.apply(op)?;
            self.after_step()?;
        }
        match end {
            ChildEnd::Drain => {
                for fi in 0..self.files.len() {
                    self.drain(fi, 0)?;
                }
                self.verify_all_quiet()
            }
            ChildEnd::Exit => self.child_exit(false),
            ChildEnd::ExitBusy => self.child_exit(true),
        }
    }

    /// A child leaves now; with `busy`, with a ring full of long FILLs over
    /// a region it may write on every sane queue.
    pub(super) fn child_exit(&mut self, busy: bool) -> Res {
        if !self.child {
            return Ok(());
        }
        for fi in (0..self.files.len()).filter(|_| busy) {
            let Some(w) = self.files[fi].write_ring() else {
                continue;
            };
            if self.files[fi].garbage {
                continue;
            }
            let Some(r) = self.files[fi].regs.iter().find(|r| r.dst_ok && r.access & WARPQ_ACCESS_WRITE != 0).cloned()
            else {
                continue;
            };
            let tail = self.files[fi].tail.unwrap_or(0);
            let head = w.load(H_SQ_HEAD);
            let room = WARPQ_SQ_ENTRIES - tail.wrapping_sub(head).min(WARPQ_SQ_ENTRIES);
            for i in 0..room {
                let s = warpq_sqe {
                    opcode: WARPQ_OP_FILL,
                    user_data: self.new_ud(),
                    dst: r.addr,
                    len: r.len.min(MAX_CMD),
                    value: u64::from(i),
                    ..Default::default()
                };
                w.write_sqe(tail.wrapping_add(i), &s);
            }
            w.store(H_SQ_TAIL, tail.wrapping_add(room));
            if let Some(&fd) = self.files[fi].fds.first() {
                self.wake(fd)?;
            }
        }
        // Leave now, commands in flight (the point).
        harness::exit(0)
    }

    /// Reaps exited children; with `block`, waits for all (bounded).
    pub(crate) fn reap_children(&mut self, block: bool) -> Res {
        let mut err = None;
        loop {
            let mut i = 0;
            while i < self.children.len() {
                let k = &mut self.children[i];
                let pid = k.child.pid();
                if let Some(exit) = k.child.try_wait() {
                    self.children.remove(i);
                    if exit != Exit::Code(0) {
                        err.get_or_insert(format!("child {pid} failed: {exit}"));
                    }
                    continue;
                }
                if k.started.elapsed() > CHILD_LIMIT {
                    let stack = k.child.kernel_stack();
                    let k = self.children.remove(i);
                    k.child.wait(std::time::Duration::ZERO);
                    err.get_or_insert(format!(
                        "child {pid} did not finish within {CHILD_LIMIT:?}; its kernel stack:\n{stack}"
                    ));
                    continue;
                }
                i += 1;
            }
            if !block || self.children.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if self.children.is_empty() {
            self.zombies.clear();
        }
        err.map_or(Ok(()), Err)
    }

    /// The end of a run: children reaped; unless `abrupt`, the files in the
    /// `drain` mask drained, the quiet buffers checked, and the files in the
    /// `unregister` mask unregister every region; then everything closed
    /// and unmapped.
    pub(crate) fn finish(&mut self, abrupt: bool, drain: u8, unregister: u8) -> Res {
        // Children are bounded on their own (CHILD_LIMIT): waiting for them
        // does not count against the run's time budget.
        let t = Instant::now();
        let mut err: Res = self.reap_children(true);
        self.child_wait = t.elapsed();
        if !abrupt {
            for fi in 0..self.files.len() {
                if err.is_ok() && drain & (1 << (fi % 8)) != 0 {
                    err = self.drain(fi, 0).and_then(|()| self.reap(fi));
                }
            }
            if err.is_ok() {
                err = self.verify_all_quiet();
            }
            for fi in 0..self.files.len() {
                if err.is_ok() && unregister & (1 << (fi % 8)) != 0 {
                    err = self.unregister_all(fi);
                }
            }
        }
        for f in self.files.drain(..) {
            for r in &f.rings {
                let _ = sys_munmap(r.addr, WARPQ_RING_SIZE);
            }
            for fd in f.fds {
                // SAFETY: closing our own descriptors.
                unsafe { libc::close(fd) };
            }
        }
        self.zombies.clear();
        for b in self.bufs.drain(..) {
            let _ = sys_munmap(b.addr, b.len);
        }
        for (t, tl) in self.tombs.drain(..) {
            let _ = sys_munmap(t, tl as usize);
        }
        let _ = sys_munmap(self.window, WIN_SLOTS * super::super::SLOT_BYTES);
        err
    }

    /// UNREGISTER of every region of file `fi` (through its first
    /// descriptor, if it has one).
    fn unregister_all(&mut self, fi: usize) -> Res {
        let Some(fd) = self.files[fi].fds.first().copied() else {
            return Ok(());
        };
        let handles: Vec<u64> = self.files[fi].regs.iter().map(|r| r.handle).collect();
        for h in handles {
            let mut u = warpq_unregister { size: 16, rsvd: 0, handle: h };
            let got = self.call(fd, WARPQ_IOC_UNREGISTER, &mut u, Place::Normal(0))?;
            check("UNREGISTER", E_UNREGISTER, got, &Expect::OkOr(vec![libc::EBUSY]))?;
        }
        Ok(())
    }
}
