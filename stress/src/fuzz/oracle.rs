//! The oracle: what the driver must answer, given the model, and the checks
//! of what it did answer. Applying an operation asks it for an expectation
//! before the system call and hands it the observations after.
//!
//! - Every ioctl returns success or an errno from its documented set (the
//!   header and the driver's ioctl paths: `E_*` below); where the outcome
//!   is predictable (declared size, bad or read-only argument, misaligned
//!   or oversized REGISTER, overlap, full table, unpinnable memory, stale
//!   handle, unknown number...) exactly that.
//! - Every completion has a status in 0..=8, zero reserved fields, result 0
//!   unless OK, and a user_data submitted on that queue; while the ring is
//!   sane they come exactly once and in order, with the predicted status
//!   (or ABORTED); COPY/FILL results update the byte model, CRC32C results
//!   are compared with it.
//! - The ring header keeps its magic, version and owner; its indices agree
//!   with what was published and consumed.

use warpq::crc32c;
use warpq::sys::*;

use super::model::{touches, Span, Taint, World};
use super::op::Place;
use super::sys::{as_bytes, ename, sys_ioctl, Hdr, InfoBuf, StatsBuf};
use super::{
    overlaps, Res, EDU_MAX, GONE, H_CQ_TAIL, H_MAGIC, H_SQ_HEAD, H_SQ_TAIL, H_VERSION, INFO_V1, MAX_CMD, NONE, PAGE64,
    RD, STATS_V1,
};

// Documented errnos, per ioctl (the header and the driver's ioctl paths).
// Every ioctl that needs the caller's queue may also fail creating it.
pub const E_INFO: &[i32] = &[libc::EFAULT, libc::EINVAL];
pub const E_STATS: &[i32] = &[libc::EFAULT, libc::EINVAL];
pub const E_REGISTER: &[i32] = &[
    libc::EFAULT,
    libc::EINVAL,
    libc::E2BIG,
    libc::ENOSPC,
    libc::EEXIST,
    libc::EBUSY,
    libc::ENOMEM,
    libc::EAGAIN,
    libc::ESRCH,
    libc::ENODEV,
    libc::EMFILE,
];
pub const E_UNREGISTER: &[i32] =
    &[libc::EFAULT, libc::EINVAL, libc::ENOENT, libc::EBUSY, libc::ESRCH, libc::ENODEV, libc::ENOMEM, libc::EMFILE];
pub const E_SUBMIT: &[i32] = &[libc::EFAULT, libc::EINVAL, libc::ENOMEM, libc::ESRCH, libc::ENODEV, libc::EMFILE];
pub const E_WAIT: &[i32] =
    &[libc::EFAULT, libc::EINVAL, libc::ENOMEM, libc::EINTR, libc::ESRCH, libc::ENODEV, libc::EMFILE];
pub const E_WAKE: &[i32] = &[libc::EFAULT, libc::EINVAL, libc::ENOMEM, libc::ESRCH, libc::ENODEV, libc::EMFILE];
pub const E_UNKNOWN: &[i32] = &[libc::ENOTTY];

pub fn show(r: Result<(), i32>) -> String {
    match r {
        Ok(()) => "success".into(),
        Err(e) => ename(e),
    }
}

fn names(l: &[i32]) -> String {
    l.iter().map(|&e| ename(e)).collect::<Vec<_>>().join("|")
}

/// What an ioctl must return.
#[derive(Clone, Debug)]
pub enum Expect {
    Ok,
    Err(i32),
    OkOr(Vec<i32>),
    ErrIn(Vec<i32>),
    Any,
}

impl Expect {
    pub fn show(&self) -> String {
        match self {
            Expect::Ok => "success".into(),
            Expect::Err(e) => ename(*e),
            Expect::OkOr(l) => format!("success or {}", names(l)),
            Expect::ErrIn(l) => names(l),
            Expect::Any => "anything documented".into(),
        }
    }
    pub fn allows(&self, r: Result<(), i32>) -> bool {
        match (self, r) {
            (Expect::Any, _) | (Expect::Ok | Expect::OkOr(_), Ok(())) => true,
            (Expect::Err(x), Err(e)) => *x == e,
            (Expect::OkOr(l) | Expect::ErrIn(l), Err(e)) => l.contains(&e),
            _ => false,
        }
    }
}

/// What a placement does to an ioctl whose semantics say `sem`.
pub fn arg_expect(place: Place, size_ok: bool, writes_back: bool, sem: Expect) -> Expect {
    match place {
        Place::Null | Place::Wild(_) => Expect::Err(libc::EFAULT),
        Place::Straddle(_) if !size_ok => Expect::Err(libc::EINVAL),
        Place::Straddle(_) => Expect::Err(libc::EFAULT),
        _ if !size_ok => Expect::Err(libc::EINVAL),
        // REGISTER and SUBMIT check that the argument is writable before
        // doing anything; INFO, STATS and WAIT fail writing it back.
        Place::ReadOnly(_) if writes_back => Expect::Err(libc::EFAULT),
        _ => sem,
    }
}

/// An ioctl's result is documented and allowed.
pub fn check(what: &str, doc: &[i32], got: Result<(), i32>, exp: &Expect) -> Res {
    if let Err(e) = got {
        if !doc.contains(&e) {
            return Err(format!("{what}: {} is not in the documented set ({})", ename(e), names(doc)));
        }
    }
    if !exp.allows(got) {
        return Err(format!("{what}: got {}, expected {}", show(got), exp.show()));
    }
    Ok(())
}

impl World<'_> {
    /// The status the engine must give `s` on file `fi`'s queue now, if it
    /// can be known.
    pub fn predict(&self, fi: usize, s: &warpq_sqe) -> Option<u32> {
        let reserved = s.rsvd0 != 0 || s.rsvd1 != 0 || s.rsvd2 != [0, 0];
        let flagged = s.flags & WARPQ_SQE_EDU_DMA != 0;
        let unknown_flags = s.flags & !(WARPQ_SQE_EDU_DMA | WARPQ_SQE_UNORDERED) != 0;
        if reserved || unknown_flags || (flagged && s.opcode != WARPQ_OP_COPY) {
            return Some(WARPQ_STATUS_INVALID);
        }
        if flagged && s.len > EDU_MAX {
            return Some(WARPQ_STATUS_INVALID);
        }
        let edu = flagged || (s.opcode == WARPQ_OP_COPY && s.len <= EDU_MAX && self.cfg.edu_engine);
        if s.opcode == WARPQ_OP_NOP {
            return Some(WARPQ_STATUS_OK);
        }
        if s.len == 0 || s.len > MAX_CMD {
            return Some(WARPQ_STATUS_INVALID);
        }
        let xlate = |va: u64, access: u32| -> Result<(), Option<u32>> {
            let f = &self.files[fi];
            let r = f
                .regs
                .iter()
                .find(|r| r.addr <= va && va < r.addr + r.len)
                .ok_or(Some(WARPQ_STATUS_FAULT_UNREGISTERED))?;
            match va.checked_add(s.len) {
                Some(e) if e <= r.addr + r.len => {}
                _ => return Err(Some(WARPQ_STATUS_FAULT_BOUNDS)),
            }
            if r.access & access != access {
                return Err(Some(WARPQ_STATUS_FAULT_ACCESS));
            }
            if r.clean {
                Ok(())
            } else {
                Err(None)
            }
        };
        let r = match s.opcode {
            WARPQ_OP_COPY => xlate(s.src, WARPQ_ACCESS_READ).and_then(|()| xlate(s.dst, WARPQ_ACCESS_WRITE)),
            WARPQ_OP_FILL => xlate(s.dst, WARPQ_ACCESS_WRITE),
            WARPQ_OP_CRC32C => xlate(s.src, WARPQ_ACCESS_READ),
            _ => return Some(WARPQ_STATUS_INVALID),
        };
        match r {
            Ok(()) if edu => None,
            Ok(()) => Some(WARPQ_STATUS_OK),
            Err(e) => e,
        }
    }

    /// Whether `s` on file `fi` can race with anything else touching its
    /// bytes; marks the other side's commands too.
    pub fn content_ok(&mut self, fi: usize, s: &warpq_sqe) -> bool {
        let (rd, wr) = touches(s);
        let mut ok = true;
        let nfiles = self.files.len();
        for (j, f) in self.files.iter_mut().chain(self.zombies.iter_mut()).enumerate() {
            if j == fi && j < nfiles {
                continue;
            }
            for c in f.fifo.iter_mut() {
                let (cr, cw) = touches(&c.s);
                let hit = |x: Span, y: Span| match (x, y) {
                    (Some((a, al)), Some((b, bl))) => overlaps(a, al, b, bl),
                    _ => false,
                };
                if hit(cw, rd) || hit(cw, wr) || hit(wr, cr) {
                    c.content_ok = false;
                    ok = false;
                }
            }
            if f.garbage || j >= nfiles {
                for r in f.regs.iter().filter(|r| r.access & WARPQ_ACCESS_WRITE != 0) {
                    if rd.is_some_and(|(a, l)| overlaps(a, l, r.addr, r.len))
                        || wr.is_some_and(|(a, l)| overlaps(a, l, r.addr, r.len))
                    {
                        ok = false;
                    }
                }
            }
        }
        let shared_busy = self.child || !self.children.is_empty();
        for (a, l) in [rd, wr].into_iter().flatten() {
            if shared_busy && self.bufs.iter().any(|b| b.shared && overlaps(b.addr, b.len as u64, a, l)) {
                ok = false;
            }
        }
        ok
    }

    /// Whether GUP can pin `[a, a + l)` for `access`: `Some(true)` if every
    /// page is in a buffer mapped with enough protection (and whether it is
    /// one read/write buffer: a clean registration), `Some(false)` if some
    /// page surely cannot be pinned, `None` if unknown.
    pub fn pinnable(&self, a: u64, l: u64, access: u32) -> (Option<bool>, bool) {
        if self.in_window(a, l) {
            // Queue mappings are refused; the rest of the window is PROT_NONE.
            return (Some(false), false);
        }
        if !(PAGE64..1 << 47).contains(&a) {
            return (Some(false), false);
        }
        let need = if access & WARPQ_ACCESS_WRITE != 0 { libc::PROT_WRITE } else { 0 }
            | if access & WARPQ_ACCESS_READ != 0 { RD } else { 0 };
        let mut all = true;
        let mut p = a;
        while p < a + l {
            match self.bufs.iter().find(|b| p >= b.addr && p < b.end()) {
                Some(b) => {
                    let pr = b.prot[((p - b.addr) / PAGE64) as usize];
                    if pr == GONE || pr & need != need || pr == NONE {
                        return (Some(false), false);
                    }
                }
                None if self.in_tomb(p, PAGE64) => return (Some(false), false),
                None => all = false,
            }
            p += PAGE64;
        }
        if !all {
            return (None, false);
        }
        let one = self.buf_containing(a, l).is_some_and(|bi| {
            let b = &self.bufs[bi];
            let p0 = ((a - b.addr) / PAGE64) as usize;
            b.prot[p0..p0 + (l / PAGE64) as usize].iter().all(|&x| x == super::RW)
        });
        (Some(true), one)
    }

    /// What REGISTER of `[addr, addr + len)` on file `fi` must return (its
    /// semantics, before the argument's placement), and whether the region
    /// it creates is clean.
    pub fn register_expect(&self, fi: usize, addr: u64, len: u64, access: u32) -> (Expect, bool) {
        let f = &self.files[fi];
        if !addr.is_multiple_of(PAGE64) || !len.is_multiple_of(PAGE64) || len == 0 || addr.checked_add(len).is_none() {
            (Expect::Err(libc::EINVAL), false)
        } else if len > self.cfg.max_region_bytes {
            (Expect::Err(libc::E2BIG), false)
        } else if access & !(WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) != 0 || access == 0 {
            (Expect::Err(libc::EINVAL), false)
        } else if f.regs.len() >= self.cfg.max_regions {
            (Expect::Err(libc::ENOSPC), false)
        } else if f.regs.iter().any(|r| overlaps(r.addr, r.len, addr, len)) {
            (Expect::Err(libc::EEXIST), false)
        } else {
            match self.pinnable(addr, len, access) {
                (Some(true), one_buf) => (Expect::OkOr(vec![libc::EBUSY, libc::EAGAIN]), one_buf),
                (Some(false), _) => (Expect::ErrIn(vec![libc::EFAULT, libc::ENOMEM, libc::EBUSY, libc::EAGAIN]), false),
                (None, _) => (Expect::Any, false),
            }
        }
    }

    /// Checks one completion of file `fi` and applies it to the model.
    pub fn completion(&mut self, fi: usize, c: &warpq_cqe) -> Res {
        self.n.completions += 1;
        let id = self.files[fi].id;
        if c.status > WARPQ_STATUS_FAULT_NOMEM || c.rsvd != 0 || c.rsvd2 != 0 {
            return Err(format!(
                "file {id}: completion {:#x} has status {} rsvd {:#x} rsvd2 {:#x}",
                c.user_data, c.status, c.rsvd, c.rsvd2
            ));
        }
        if (WARPQ_STATUS_FAULT_UNREGISTERED..=WARPQ_STATUS_FAULT_IOMMU).contains(&c.status)
            || c.status == WARPQ_STATUS_FAULT_NOMEM
        {
            self.n.faults += 1;
        }
        if c.status == WARPQ_STATUS_ABORTED {
            self.n.aborted += 1;
        }
        if c.status != WARPQ_STATUS_OK && c.result != 0 {
            return Err(format!(
                "file {id}: completion {:#x} failed with status {} but result {:#x}",
                c.user_data, c.status, c.result
            ));
        }
        let f = &mut self.files[fi];
        if f.garbage {
            if !f.known.contains(&c.user_data) && c.user_data != 0 {
                return Err(format!(
                    "file {id}: completion with user_data {:#x} that was never submitted on this queue",
                    c.user_data
                ));
            }
            return Ok(());
        }
        let Some(cmd) = f.fifo.pop_front() else {
            return Err(format!(
                "file {id}: completion {:#x} (status {}) with no command outstanding{}",
                c.user_data,
                c.status,
                if f.known.contains(&c.user_data) { " (a duplicate)" } else { " (never submitted)" }
            ));
        };
        let s = cmd.s;
        if c.user_data != s.user_data {
            return Err(format!(
                "file {id}: completion {:#x} arrived where {:#x} was next ({}); {} more outstanding",
                c.user_data,
                s.user_data,
                if f.known.contains(&c.user_data) { "out of order or duplicate" } else { "never submitted" },
                f.fifo.len()
            ));
        }
        if let Some(p) = cmd.status {
            self.n.predicted += u64::from(c.status == p);
            if c.status != p && c.status != WARPQ_STATUS_ABORTED {
                let (src, dst) = (self.explain(fi, s.src), self.explain(fi, s.dst));
                let stats = self.queue_stats(fi);
                return Err(format!(
                    "file {id}: command {:#x} (op {} flags {:#x} src {:#x} dst {:#x} len {:#x}) completed with status {}, expected {p}\n  src {src}\n  dst {dst}\n  queue {stats}",
                    s.user_data, s.opcode, s.flags, s.src, s.dst, s.len, c.status
                ));
            }
        }
        let (_, wr) = touches(&s);
        match c.status {
            WARPQ_STATUS_OK => {
                let expect_len = match s.opcode {
                    WARPQ_OP_FILL | WARPQ_OP_COPY => Some(s.len),
                    WARPQ_OP_NOP => Some(0),
                    _ => None,
                };
                if let Some(l) = expect_len {
                    if c.result != l {
                        return Err(format!(
                            "file {id}: command {:#x} (op {}) result {:#x}, expected {l:#x}",
                            s.user_data, s.opcode, c.result
                        ));
                    }
                }
                match s.opcode {
                    WARPQ_OP_FILL if cmd.content_ok => self.model_fill(s.dst, s.len, s.value as u8),
                    WARPQ_OP_COPY if cmd.content_ok => self.model_copy(s.src, s.dst, s.len),
                    WARPQ_OP_CRC32C if cmd.content_ok => {
                        if let Some(bytes) = self.model_bytes(s.src, s.len) {
                            let want = u64::from(crc32c(s.value as u32, &bytes));
                            self.n.crcs += 1;
                            if c.result != want {
                                return Err(format!(
                                    "file {id}: CRC32C {:#x} of {:#x}+{:#x}: {:#x}, the model says {want:#x}",
                                    s.user_data, s.src, s.len, c.result
                                ));
                            }
                        }
                    }
                    _ => {
                        if let Some((a, l)) = wr {
                            self.mark_unknown(a, l);
                        }
                    }
                }
            }
            WARPQ_STATUS_ABORTED | WARPQ_STATUS_FAULT_IOMMU | WARPQ_STATUS_DEVICE_ERROR => {
                if let Some((a, l)) = wr {
                    self.mark_unknown(a, l);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The queue's counters, for failure reports.
    pub fn queue_stats(&self, fi: usize) -> String {
        let Some(&fd) = self.files[fi].fds.first() else {
            return "(no descriptor)".into();
        };
        let mut b = StatsBuf::default();
        b.s.size = std::mem::size_of::<StatsBuf>() as u32;
        let r = sys_ioctl(fd, WARPQ_IOC_STATS, &mut b as *mut StatsBuf as u64);
        let v = b.s;
        match r {
            Ok(()) => format!(
                "invalidations {} by event {:?} ignored {} teardowns {} drains {} drain_timeouts {} rebuilds {} (+{} retries) pinned {} by status {:?}",
                v.invalidations, v.invalidations_by_event, v.ignored_by_policy, v.teardowns, v.drains, v.drain_timeouts, v.rebuilds, v.rebuild_retries, v.pages_pinned, v.commands_by_status
            ),
            Err(e) => format!("(STATS: {})", ename(e)),
        }
    }

    /// Header checks that hold whatever the fuzzer did to the indices.
    pub fn check_header(&mut self, fi: usize, h: Hdr) -> Res {
        let id = self.files[fi].id;
        let magic = h.load(H_MAGIC);
        let version = h.load(H_VERSION);
        if magic != WARPQ_RING_MAGIC || version != WARPQ_UAPI_VERSION {
            return Err(format!("file {id}: ring header magic {magic:#x} version {version}"));
        }
        let owner = h.owner();
        let f = &mut self.files[fi];
        match f.owner {
            None => {
                if f.parent_owner == Some(owner) {
                    return Err(format!("file {id}: the child sees its parent's queue (owner_id {owner:#x})"));
                }
                f.owner = Some(owner);
            }
            Some(o) if o != owner => {
                return Err(format!("file {id}: ring owner_id changed from {o:#x} to {owner:#x}"));
            }
            _ => {}
        }
        if f.garbage {
            return Ok(());
        }
        let tail = h.load(H_SQ_TAIL);
        if let Some(t) = f.tail {
            if t != tail {
                return Err(format!("file {id}: sq_tail is {tail}, the fuzzer last published {t}"));
            }
        }
        let sh = h.load(H_SQ_HEAD);
        if tail.wrapping_sub(sh) > WARPQ_SQ_ENTRIES {
            return Err(format!("file {id}: sq_head {sh} is past sq_tail {tail}"));
        }
        if let Some(c) = f.c_off {
            // The engine publishes a batch (at most 32 completions) by
            // moving sq_head, then cq_tail: with sq_head unchanged around
            // the read, cq_tail - sq_head is c, or up to one batch less
            // (a command set aside for a rebuild keeps sq_head at itself
            // until it completes).
            for _ in 0..100 {
                let sh1 = h.load(H_SQ_HEAD);
                let ct = h.load(H_CQ_TAIL);
                let sh2 = h.load(H_SQ_HEAD);
                if sh1 != sh2 {
                    continue;
                }
                let d = sh1.wrapping_add(c).wrapping_sub(ct);
                if d > 32 {
                    return Err(format!("file {id}: cq_tail {ct} and sq_head {sh1} disagree: every completion consumes one submission (offset {c})"));
                }
                break;
            }
        }
        Ok(())
    }

    /// INFO's answer (a normal placement, success): the size it says it
    /// wrote, nothing written past it, the values the device promises.
    pub fn check_info(&self, declared: usize, b: &InfoBuf) -> Res {
        let v = b.i;
        let want_caps = WARPQ_CAP_RING | WARPQ_CAP_SUBMIT_IOCTL | WARPQ_CAP_FORK_QUEUE;
        let written = v.size as usize;
        if written < INFO_V1 || written > declared.min(self.cfg.info_size) {
            return Err(format!(
                "INFO of {declared} bytes says it wrote {written} (the kernel's is {})",
                self.cfg.info_size
            ));
        }
        if as_bytes(b)[written.max(std::mem::size_of::<warpq_info>())..].iter().any(|&x| x != 0) {
            return Err(format!("INFO wrote past the {written} bytes it says it wrote"));
        }
        if v.version != WARPQ_UAPI_VERSION
            || v.capabilities & want_caps != want_caps
            || v.sq_entries != WARPQ_SQ_ENTRIES
            || v.cq_entries != WARPQ_CQ_ENTRIES
            || v.ring_size as usize != WARPQ_RING_SIZE
            || v.max_regions as usize != self.cfg.max_regions
            || v.max_region_bytes != self.cfg.max_region_bytes
            || v.policy > 1
            || v.dma_translation > 4
        {
            return Err(format!("INFO returned {v:?}"));
        }
        Ok(())
    }

    /// STATS's answer for file `fi` (a normal placement, success): the size
    /// it says it wrote, nothing past it, pins within what is registered,
    /// and exact command counts when nothing can complete meanwhile.
    pub fn check_stats(&self, fi: usize, declared: usize, b: &StatsBuf) -> Res {
        let v = &b.s;
        let id = self.files[fi].id;
        let written = v.size as usize;
        if written < STATS_V1 || written > declared.min(self.cfg.stats_size) {
            return Err(format!(
                "STATS of {declared} bytes says it wrote {written} (the kernel's is {})",
                self.cfg.stats_size
            ));
        }
        if as_bytes(b)[written..].iter().any(|&x| x != 0) {
            return Err(format!("STATS wrote past the {written} bytes it says it wrote"));
        }
        if v.pages_pinned > v.pages_pinned_peak {
            return Err(format!("file {id}: STATS pages_pinned {} > peak {}", v.pages_pinned, v.pages_pinned_peak));
        }
        let f = &self.files[fi];
        let pages: u64 = f.regs.iter().map(|r| r.len / PAGE64).sum();
        // Two rebuilds of one chunk may race (the rebuild worker and this
        // process's ioctl or fault): each pins before one publishes and the
        // other undoes its own, so for a moment a chunk's pages count twice.
        // More than that is a leak (the suite's pin balance checks the end).
        if v.pages_pinned > 2 * pages {
            return Err(format!("file {id}: STATS pages_pinned {} with {pages} pages registered", v.pages_pinned));
        }
        // Exact only when nothing can complete: a sane, empty queue whose
        // kernel-owned indices the fuzzer never overwrote.
        if let (false, true, true, Some(h)) = (f.garbage, f.honest, f.fifo.is_empty(), f.read_ring()) {
            // FAULT_NOMEM completions count in commands_failed only.
            let total = v.commands_ok + v.commands_failed;
            let failed: u64 = v.commands_by_status[1..].iter().sum();
            let ct = u64::from(h.load(H_CQ_TAIL));
            let invalid = h.sq_invalid();
            if total != ct
                || v.commands_ok != v.commands_by_status[0]
                || v.commands_failed < failed
                || invalid != v.commands_by_status[WARPQ_STATUS_INVALID as usize]
            {
                return Err(format!(
                    "file {id}: STATS ok {} failed {} by status {:?} on a queue that posted {ct} completions, {invalid} INVALID by the ring header",
                    v.commands_ok, v.commands_failed, v.commands_by_status
                ));
            }
        }
        Ok(())
    }

    /// A REGISTER over `[addr, addr + len)` changed what commands of file
    /// `fi` over it complete with.
    pub fn registration_changed(&mut self, fi: usize, addr: u64, len: u64) {
        self.taint(addr, len, Taint::Status, Some(fi));
    }
}
