//! The ring: entries resolved against the model and published through the
//! tail, completions reaped, garbage tails and overwritten header words,
//! and the way back to a known ring (resync, drain).

use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use warpq::sys::*;

use super::super::model::{red, sel, World};
use super::super::op::{Addr, Change, HdrField, Pick, Place, Rsvd, Sqe, Tail};
use super::super::oracle::{check, Expect, E_STATS, E_WAIT};
use super::super::sys::StatsBuf;
use super::super::{
    Res, DRAIN_LIMIT, H_CQ_HEAD, H_CQ_TAIL, H_FLAGS, H_SQ_HEAD, H_SQ_TAIL, KERNEL_ADDR, PAGE64, RING64,
};
use super::{default_map, OPEN};

impl World<'_> {
    /// The registrations of file `fi` an address may point into (for a
    /// destination, only those the device may write through).
    fn reg_spans(&self, fi: usize, write: bool) -> Vec<(u64, u64)> {
        self.files[fi].regs.iter().filter(|r| !write || r.dst_ok).map(|r| (r.addr, r.len)).collect()
    }

    /// The address `a` names for a command of `len` bytes on file `fi`.
    fn addr(&self, fi: usize, a: Addr, len: u64, write: bool) -> u64 {
        let regs = self.reg_spans(fi, write);
        let len = len.max(1);
        let weird = |p: Pick| [0, u64::MAX - 4095, KERNEL_ADDR, 0x1000, 1 << 47][p as usize % 5];
        let v = match a {
            Addr::InReg(p, off) | Addr::RegEnd(p, off) if !regs.is_empty() => {
                let (ra, rl) = regs[p as usize % regs.len()];
                match a {
                    Addr::InReg(..) if len <= rl => ra + off % (rl - len + 1),
                    Addr::InReg(..) => ra,
                    _ => ra + rl - 1 - off % len.min(rl),
                }
            }
            Addr::InReg(p, off) | Addr::RegEnd(p, off) | Addr::InBuf(p, off) if !self.bufs.is_empty() => {
                let b = &self.bufs[p as usize % self.bufs.len()];
                b.addr + off % b.len as u64
            }
            Addr::InReg(p, off) | Addr::RegEnd(p, off) | Addr::InBuf(p, off) | Addr::InTomb(p, off) => {
                match sel(p, self.tombs.len()) {
                    Some(i) => self.tombs[i].0 + red(off, self.tombs[i].1),
                    None => weird(p),
                }
            }
            Addr::InRing(p, off) if !write => match sel(p, self.files[fi].rings.len()) {
                Some(r) => self.files[fi].rings[r].addr + off % RING64,
                None => 0,
            },
            Addr::InRing(..) => 0,
            Addr::Abs(v) => v,
        };
        if write && self.in_window(v, 1) {
            0
        } else {
            v
        }
    }

    /// A page-aligned page inside one of file `fi`'s registrations (one the
    /// device may write through, for a destination): `p` modulo the
    /// registrations, the quotient modulo its pages.
    fn page_in_reg(&self, fi: usize, write: bool, p: Pick) -> Option<u64> {
        let regs = self.reg_spans(fi, write);
        let i = sel(p, regs.len())?;
        let (a, l) = regs[i];
        Some(a + PAGE64 * red(u64::from(p) / regs.len() as u64, l / PAGE64))
    }

    /// The entry `s` describes, for file `fi`'s queue now, with a fresh
    /// user_data.
    pub(crate) fn sqe(&mut self, fi: usize, s: &Sqe) -> warpq_sqe {
        let mut e = warpq_sqe {
            opcode: s.opcode,
            flags: s.flags,
            user_data: self.new_ud(),
            len: s.len,
            value: s.value,
            ..Default::default()
        };
        e.src = self.addr(fi, s.src, s.len, false);
        e.dst = self.addr(fi, s.dst, s.len, true);
        let edu = s.flags == WARPQ_SQE_EDU_DMA || (s.flags == 0 && self.cfg.edu_engine);
        if let (Some((ps, pd)), true, WARPQ_OP_COPY) = (s.edge, edu, s.opcode) {
            // The edu engine's edge: one whole page, page-aligned both sides.
            e.len = PAGE64;
            if let Some(a) = self.page_in_reg(fi, false, ps) {
                e.src = a;
            }
            if let Some(a) = self.page_in_reg(fi, true, pd) {
                e.dst = a;
            }
        }
        match s.rsvd {
            Some(Rsvd::R0(v)) => e.rsvd0 = v,
            Some(Rsvd::R1(v)) => e.rsvd1 = v,
            Some(Rsvd::R2(i, v)) => e.rsvd2[usize::from(i & 1)] = v,
            None => {}
        }
        e
    }

    /// Consumes the completions of file `fi`'s queue and checks each.
    pub(crate) fn reap(&mut self, fi: usize) -> Res {
        let (Some(r), Some(w)) = (self.files[fi].read_ring(), self.files[fi].write_ring()) else {
            return Ok(());
        };
        self.check_header(fi, r)?;
        let head = r.load(H_CQ_HEAD);
        let tail = r.load(H_CQ_TAIL);
        let n = tail.wrapping_sub(head);
        if n == 0 {
            return Ok(());
        }
        if n > WARPQ_CQ_ENTRIES {
            if self.files[fi].garbage {
                w.store(H_CQ_HEAD, tail);
                return Ok(());
            }
            return Err(format!(
                "file {}: cq_tail {tail} - cq_head {head} = {n} > {WARPQ_CQ_ENTRIES} in a sane ring",
                self.files[fi].id
            ));
        }
        for i in 0..n {
            let c = r.read_cqe(head.wrapping_add(i));
            self.completion(fi, &c)?;
        }
        w.store(H_CQ_HEAD, tail);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn ring_submit(
        &mut self,
        file: Pick,
        fd: Pick,
        ops: &[Sqe],
        wake: bool,
        resync: bool,
        start: u32,
        tail: u32,
    ) -> Res {
        let Some(fi) = self.pick_file(file) else {
            return self.apply(&OPEN);
        };
        let (Some(r), Some(w)) = (self.files[fi].read_ring(), self.files[fi].write_ring()) else {
            return self.apply(&default_map(file));
        };
        let k = ops.len();
        if self.files[fi].garbage {
            if resync {
                return self.resync(fi, fd);
            }
            // Keep the chaos going: entries anywhere, a tail anywhere near.
            for (i, o) in ops.iter().enumerate() {
                let s = self.sqe(fi, o);
                self.files[fi].known.insert(s.user_data);
                w.write_sqe(start.wrapping_add(i as u32), &s);
            }
            let t = r.load(H_SQ_HEAD).wrapping_add(tail % (WARPQ_SQ_ENTRIES + 1));
            w.store(H_SQ_TAIL, t);
            self.log(format!("  file {}: chaos: {k} entries at {start}, tail {t}", self.files[fi].id));
            self.n.commands += k as u64;
            return Ok(());
        }
        let head = r.load(H_SQ_HEAD);
        let t0 = self.files[fi].tail.unwrap_or_else(|| r.load(H_SQ_TAIL));
        let room = (WARPQ_SQ_ENTRIES - t0.wrapping_sub(head).min(WARPQ_SQ_ENTRIES)) as usize;
        let k = k.min(room);
        for (i, o) in ops.iter().take(k).enumerate() {
            let s = self.sqe(fi, o);
            self.files[fi].known.insert(s.user_data);
            w.write_sqe(t0.wrapping_add(i as u32), &s);
            self.outstanding(fi, s);
        }
        let t = t0.wrapping_add(k as u32);
        w.store(H_SQ_TAIL, t);
        self.files[fi].tail = Some(t);
        self.log(format!("  file {}: {k} entries, tail {t} (head {head})", self.files[fi].id));
        fence(Ordering::SeqCst);
        if r.load(H_FLAGS) & WARPQ_RING_NEED_WAKEUP != 0 && wake {
            if let Some(fd) = self.fd_of(fi, fd) {
                self.wake(fd)?;
            }
        }
        Ok(())
    }

    pub(super) fn garbage_tail(&mut self, file: Pick, tail: Tail) -> Res {
        let Some(fi) = self.pick_file(file) else {
            return self.apply(&OPEN);
        };
        let (Some(r), Some(w)) = (self.files[fi].read_ring(), self.files[fi].write_ring()) else {
            return Ok(());
        };
        let head = r.load(H_SQ_HEAD);
        let t = match tail {
            Tail::Far(n) => head.wrapping_add(WARPQ_SQ_ENTRIES + 1).wrapping_add(n),
            Tail::Behind(n) => head.wrapping_sub(1).wrapping_sub(n),
            Tail::Near(n) => head.wrapping_add(n % (WARPQ_SQ_ENTRIES + 1)),
            Tail::Any(v) => v,
        };
        self.enter_garbage(fi);
        self.log(format!("  file {}: tail {t} (head {head})", self.files[fi].id));
        w.store(H_SQ_TAIL, t);
        Ok(())
    }

    pub(super) fn corrupt_header(&mut self, file: Pick, field: HdrField, change: Change) -> Res {
        let Some(fi) = self.pick_file(file) else {
            return self.apply(&OPEN);
        };
        let (Some(r), Some(w)) = (self.files[fi].read_ring(), self.files[fi].write_ring()) else {
            return Ok(());
        };
        let off = match field {
            HdrField::CqHead => H_CQ_HEAD,
            HdrField::SqHead => H_SQ_HEAD,
            HdrField::CqTail => H_CQ_TAIL,
            HdrField::Flags => H_FLAGS,
        };
        let old = r.load(off);
        let v = match change {
            Change::Add(n) => old.wrapping_add(1).wrapping_add(n),
            Change::Sub(n) => old.wrapping_sub(1).wrapping_sub(n),
            Change::Set(v) => v,
        };
        self.enter_garbage(fi);
        if field != HdrField::CqHead {
            self.files[fi].honest = false;
        }
        self.log(format!("  file {}: header field {off} from {old} to {v}", self.files[fi].id));
        w.store(off, v);
        Ok(())
    }

    /// Where the kernel's own `sq_head` and `cq_tail` stand: the queue's
    /// completions so far (STATS; each completion moves both by one). The
    /// page's copies may be garbage the fuzzer wrote: the kernel publishes
    /// them and never reads them back, so only its next completion mends
    /// them. Read while the engine posts a completion, this may lag by one.
    fn kernel_index(&mut self, fd: i32) -> Res<u32> {
        let mut b = StatsBuf::default();
        b.s.size = std::mem::size_of::<StatsBuf>() as u32;
        let got = self.call(fd, WARPQ_IOC_STATS, &mut b, Place::Normal(0))?;
        check("STATS", E_STATS, got, &Expect::Ok)?;
        // Not the sum of commands_by_status: FAULT_NOMEM has no row there.
        Ok((b.s.commands_ok + b.s.commands_failed) as u32)
    }

    /// Brings a garbage ring back to a state the fuzzer knows: parks the
    /// tail out of reach, waits for the engine to go idle, then sets the
    /// tail to the head and consumes every completion. The kernel's indices
    /// come from STATS, not from the page (see [`World::kernel_index`]).
    pub(crate) fn resync(&mut self, fi: usize, fd: Pick) -> Res {
        if !self.files[fi].garbage {
            return self.drain(fi, fd);
        }
        // Without a descriptor nothing can wake a sleeping engine.
        let Some(fd) = self.fd_of(fi, fd) else {
            return Ok(());
        };
        let (Some(r), Some(w)) = (self.files[fi].read_ring(), self.files[fi].write_ring()) else {
            return Ok(());
        };
        let id = self.files[fi].id;
        // Park the tail out of reach: the engine takes nothing new, and
        // finishes at most the command it already took.
        let head = self.kernel_index(fd)?;
        w.store(H_SQ_TAIL, head.wrapping_add(0x8000_0000));
        fence(Ordering::SeqCst);
        // Then a NOP sentinel right at the head: the engine completes in
        // order, so once the sentinel completes nothing else is in flight.
        // (A command in flight may consume the sentinel's index first: then
        // the sentinel goes at the next head.) The completions up to the
        // kernel's tail are consumed on the way, which also frees the
        // completion ring a garbage `cq_head` may have filled.
        let sentinel = self.new_ud();
        self.files[fi].known.insert(sentinel);
        let nop = warpq_sqe { opcode: WARPQ_OP_NOP, user_data: sentinel, ..Default::default() };
        let t0 = Instant::now();
        let mut placed_at: Option<u32> = None;
        let mut seen = false;
        while !seen {
            let h = self.kernel_index(fd)?;
            let ch = r.load(H_CQ_HEAD);
            let n = h.wrapping_sub(ch);
            if n <= WARPQ_CQ_ENTRIES {
                for i in 0..n {
                    let c = r.read_cqe(ch.wrapping_add(i));
                    seen |= c.user_data == sentinel;
                    self.completion(fi, &c)?;
                }
            }
            w.store(H_CQ_HEAD, h);
            if seen {
                break;
            }
            if placed_at != Some(h) {
                w.write_sqe(h, &nop);
                w.store(H_SQ_TAIL, h.wrapping_add(1));
                fence(Ordering::SeqCst);
                placed_at = Some(h);
                self.wake(fd)?;
            }
            if t0.elapsed() > DRAIN_LIMIT {
                return Err(format!(
                    "file {id}: a NOP published alone after parking the tail did not complete within {DRAIN_LIMIT:?} \
                     (the kernel's head {h}; the page's sq_head {} sq_tail {} cq_head {} cq_tail {} flags {:#x})",
                    r.load(H_SQ_HEAD),
                    r.load(H_SQ_TAIL),
                    r.load(H_CQ_HEAD),
                    r.load(H_CQ_TAIL),
                    r.load(H_FLAGS)
                ));
            }
            if t0.elapsed() > Duration::from_millis(50) {
                self.wake(fd)?;
                std::thread::sleep(Duration::from_millis(2));
            } else {
                std::thread::yield_now();
            }
        }
        let ct = r.load(H_CQ_TAIL);
        let head = r.load(H_SQ_HEAD);
        let tail = r.load(H_SQ_TAIL);
        if tail != head {
            return Err(format!("file {id}: after the sentinel completed, sq_head {head} differs from sq_tail {tail}"));
        }
        self.log(format!("  file {id}: resynchronised at head {head}, cq_tail {ct}"));
        self.n.resyncs += 1;
        let f = &mut self.files[fi];
        f.garbage = false;
        f.tail = Some(head);
        f.c_off = Some(ct.wrapping_sub(head));
        Ok(())
    }

    /// Waits (bounded) until every outstanding command of file `fi` completed.
    pub(crate) fn drain(&mut self, fi: usize, fd: Pick) -> Res {
        if self.files[fi].garbage {
            return self.resync(fi, fd);
        }
        if self.files[fi].fifo.is_empty() {
            return Ok(());
        }
        let Some(fd) = self.fd_of(fi, fd) else {
            return Ok(());
        };
        if self.files[fi].read_ring().is_none() || self.files[fi].write_ring().is_none() {
            return Ok(());
        }
        self.wake(fd)?;
        let t0 = Instant::now();
        let mut last = self.files[fi].fifo.len();
        let mut progress = Instant::now();
        while !self.files[fi].fifo.is_empty() {
            self.reap(fi)?;
            if self.files[fi].fifo.is_empty() {
                break;
            }
            if self.files[fi].fifo.len() != last {
                last = self.files[fi].fifo.len();
                progress = Instant::now();
            }
            if progress.elapsed() > DRAIN_LIMIT || t0.elapsed() > 3 * DRAIN_LIMIT {
                let f = &self.files[fi];
                let h =
                    f.read_ring().map(|h| (h.load(H_SQ_HEAD), h.load(H_SQ_TAIL), h.load(H_CQ_TAIL), h.load(H_FLAGS)));
                return Err(format!(
                    "file {}: {} commands never completed (first {:#x}); sq_head/sq_tail/cq_tail/flags {h:?}",
                    f.id,
                    f.fifo.len(),
                    f.fifo[0].s.user_data
                ));
            }
            let mut v = warpq_wait { size: 24, min_ready: 1, timeout_ns: 20_000_000, ..Default::default() };
            let got = self.call(fd, WARPQ_IOC_WAIT, &mut v, Place::Normal(0))?;
            check("WAIT", E_WAIT, got, &Expect::Ok)?;
            if v.ready == 0 {
                self.wake(fd)?;
            }
        }
        Ok(())
    }
}
