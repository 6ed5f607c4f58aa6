//! The fuzzer's model of one process: its files (queues) and their ring
//! mappings, registrations and outstanding commands; its buffers with a
//! byte model of their contents; tombstones; and what each command must
//! complete with. Applying an operation updates it; the oracle reads it.

use std::collections::{HashSet, VecDeque};
use std::ffi::CString;
use std::time::Duration;

use warpq::sys::*;

use super::op::Pick;
use super::sys::{ename, errno, mmap_anon, read_mem, sys_mprotect, Hdr};
use super::{
    overlaps, Res, EDU_MAX, GONE, MAX_CMD, NONE, PAGE, PAGE64, RD, RING_PAGES, RW, SLOT_BYTES, WILD_SLOT, WIN_SLOTS,
};

/// One registration as the fuzzer knows it.
#[derive(Clone)]
pub struct Reg {
    pub handle: u64,
    pub addr: u64,
    pub len: u64,
    pub access: u32,
    /// Inside one buffer, all pages read/write at registration, and no
    /// munmap/mprotect/mremap of its range since: commands succeed.
    pub clean: bool,
    /// Only memory the fuzzer owns for good (buffers, tombstones): commands
    /// may write through it.
    pub dst_ok: bool,
}

/// One published command.
#[derive(Clone)]
pub struct Cmd {
    pub s: warpq_sqe,
    /// The status it must complete with (or ABORTED); `None`: unpredictable.
    pub status: Option<u32>,
    /// Nothing else may have touched its bytes while it was outstanding.
    pub content_ok: bool,
}

/// A mapping of the queue.
#[derive(Clone)]
pub struct RingMap {
    pub addr: u64,
    pub slot: usize,
    pub prot: [i32; RING_PAGES],
}

impl RingMap {
    pub fn readable(&self) -> bool {
        self.prot.iter().all(|&p| p != GONE && p & RD != 0)
    }
    pub fn writable(&self) -> bool {
        self.prot.iter().all(|&p| p != GONE && p & libc::PROT_WRITE != 0)
    }
    pub fn any_mapped(&self) -> bool {
        self.prot.iter().any(|&p| p != GONE)
    }
}

/// One open file of the device (its queue for this process).
#[derive(Clone)]
pub struct FileSt {
    pub id: u32,
    pub fds: Vec<i32>,
    pub rdonly: bool,
    pub rings: Vec<RingMap>,
    pub regs: Vec<Reg>,
    pub dead_handles: Vec<u64>,
    /// The parent's handles (in a child): never valid here.
    pub foreign_handles: Vec<u64>,
    pub known: HashSet<u64>,
    pub fifo: VecDeque<Cmd>,
    /// The ring indices are not trustworthy: only status ranges and
    /// user_data membership are checked until a resync.
    pub garbage: bool,
    pub garbage_since: u64,
    /// `cq_tail - sq_head` when sane (each completion moves both).
    pub c_off: Option<u32>,
    /// The tail the header must show when sane.
    pub tail: Option<u32>,
    /// No kernel-owned index was ever overwritten (exact STATS checks).
    pub honest: bool,
    pub owner: Option<u64>,
    pub parent_owner: Option<u64>,
    /// A live child may hold this file open.
    pub inherited: bool,
}

impl FileSt {
    pub fn new(id: u32, fd: i32, rdonly: bool) -> Self {
        FileSt {
            id,
            fds: vec![fd],
            rdonly,
            rings: Vec::new(),
            regs: Vec::new(),
            dead_handles: Vec::new(),
            foreign_handles: Vec::new(),
            known: HashSet::new(),
            fifo: VecDeque::new(),
            garbage: false,
            garbage_since: 0,
            c_off: Some(0),
            tail: Some(0),
            honest: true,
            owner: None,
            parent_owner: None,
            inherited: false,
        }
    }
    pub fn read_ring(&self) -> Option<Hdr> {
        self.rings.iter().find(|r| r.readable()).map(|r| Hdr(r.addr))
    }
    pub fn write_ring(&self) -> Option<Hdr> {
        self.rings.iter().find(|r| r.writable()).map(|r| Hdr(r.addr))
    }
    pub fn alive(&self) -> bool {
        !self.fds.is_empty() || self.rings.iter().any(RingMap::any_mapped)
    }
}

/// A buffer mapping with its model; followed by a PROT_NONE guard page.
#[derive(Clone)]
pub struct Buf {
    pub id: u32,
    pub addr: u64,
    pub len: usize,
    pub shared: bool,
    /// Never split into several vmas (mprotect, partial munmap).
    pub whole: bool,
    pub prot: Vec<i32>,
    pub model: Vec<u8>,
    pub known: Vec<bool>,
}

impl Buf {
    pub fn pages(&self) -> usize {
        self.len / PAGE
    }
    pub fn end(&self) -> u64 {
        self.addr + self.len as u64
    }
    pub fn page_addr(&self, p: usize) -> u64 {
        self.addr + (p * PAGE) as u64
    }
}

/// What the runs counted.
#[derive(Default, Clone, Copy)]
pub struct Counters {
    pub steps: u64,
    pub ioctls: u64,
    pub commands: u64,
    pub completions: u64,
    pub forks: u64,
    pub faults: u64,
    pub aborted: u64,
    pub garbage: u64,
    /// Completions whose status was predicted exactly (and matched).
    pub predicted: u64,
    /// CRC32C results compared with the model.
    pub crcs: u64,
    /// Buffer bytes compared with the model.
    pub verified: u64,
    pub resyncs: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.predicted += o.predicted;
        self.crcs += o.crcs;
        self.verified += o.verified;
        self.resyncs += o.resyncs;
        self.garbage += o.garbage;
        self.aborted += o.aborted;
        self.completions += o.completions;
        self.commands += o.commands;
        self.forks += o.forks;
    }
}

/// Static configuration found at start.
pub struct Cfg {
    pub path: CString,
    pub max_regions: usize,
    pub max_region_bytes: u64,
    pub edu_engine: bool,
    /// The kernel's `struct warpq_info` and `struct warpq_stats` sizes.
    pub info_size: usize,
    pub stats_size: usize,
    pub policy: u32,
    pub dma_translation: u32,
}

/// A byte range `(address, length)` a command reads or writes, if any.
pub type Span = Option<(u64, u64)>;

/// The command with its read and write ranges, if it touches memory at all
/// (entries the engine refuses before translating touch nothing).
pub fn touches(s: &warpq_sqe) -> (Span, Span) {
    let reserved = s.rsvd0 != 0 || s.rsvd1 != 0 || s.rsvd2 != [0, 0];
    let edu = s.flags & WARPQ_SQE_EDU_DMA != 0;
    let unknown_flags = s.flags & !(WARPQ_SQE_EDU_DMA | WARPQ_SQE_UNORDERED) != 0;
    if reserved || unknown_flags || (edu && s.opcode != WARPQ_OP_COPY) || (edu && s.len > EDU_MAX) {
        return (None, None);
    }
    if s.len == 0 || s.len > MAX_CMD {
        return (None, None);
    }
    match s.opcode {
        WARPQ_OP_COPY => (Some((s.src, s.len)), Some((s.dst, s.len))),
        WARPQ_OP_FILL => (None, Some((s.dst, s.len))),
        WARPQ_OP_CRC32C => (Some((s.src, s.len)), None),
        _ => (None, None),
    }
}

pub fn cmd_touches(s: &warpq_sqe, a: u64, l: u64) -> bool {
    let (r, w) = touches(s);
    r.is_some_and(|(x, n)| overlaps(x, n, a, l)) || w.is_some_and(|(x, n)| overlaps(x, n, a, l))
}

/// What an mm operation or a registration change does to outstanding
/// commands touching a range.
pub enum Taint {
    /// Their status is no longer predictable.
    Status,
    /// Their bytes may have been touched by something else.
    Content,
    /// Both.
    Both,
}

/// A forked child the parent still has to reap.
pub struct Kid {
    pub child: crate::harness::Child,
    pub started: std::time::Instant,
}

/// Everything one process (the parent of a run, or a child) fuzzes with.
pub struct World<'c> {
    pub cfg: &'c Cfg,
    pub step: u64,
    pub tag: u64,
    pub next_ud: u64,
    pub next_id: u32,
    pub files: Vec<FileSt>,
    /// Files closed while a child may still hold them: their queues may run.
    pub zombies: Vec<FileSt>,
    pub bufs: Vec<Buf>,
    /// PROT_NONE ranges that once held buffers (or guard pages): never given
    /// to anything but the fuzzer's own buffers.
    pub tombs: Vec<(u64, u64)>,
    pub window: u64,
    pub win_used: [bool; WIN_SLOTS],
    pub children: Vec<Kid>,
    pub child: bool,
    pub n: Counters,
    /// The last steps and what they did, printed with a failure.
    pub history: VecDeque<String>,
    /// Time spent waiting for the children at the end of the run.
    pub child_wait: Duration,
}

/// `p` reduced to `0..n`, if there is anything to pick.
pub fn sel(p: Pick, n: usize) -> Option<usize> {
    (n > 0).then(|| p as usize % n)
}

/// `v` reduced to `0..n` (0 if `n` is 0).
pub fn red(v: u64, n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        v % n
    }
}

impl<'c> World<'c> {
    /// A fresh world: the window of ring slots and scratch pages reserved.
    pub fn new(cfg: &'c Cfg, tag: u32) -> Res<World<'c>> {
        let window = mmap_anon(0, WIN_SLOTS * SLOT_BYTES, NONE, false, false)
            .ok_or_else(|| format!("reserving the window: {}", ename(errno())))?;
        let mut win_used = [false; WIN_SLOTS];
        win_used[0] = true;
        win_used[WILD_SLOT] = true;
        sys_mprotect(window, PAGE, RW).map_err(|e| format!("scratch: {}", ename(e)))?;
        sys_mprotect(window + PAGE64, PAGE, RD).map_err(|e| format!("scratch: {}", ename(e)))?;
        Ok(World {
            cfg,
            step: 0,
            tag: u64::from(tag),
            next_ud: 1,
            next_id: 1,
            files: Vec::new(),
            zombies: Vec::new(),
            bufs: Vec::new(),
            tombs: Vec::new(),
            window,
            win_used,
            children: Vec::new(),
            child: false,
            n: Counters::default(),
            history: VecDeque::new(),
            child_wait: Duration::ZERO,
        })
    }

    pub fn new_ud(&mut self) -> u64 {
        let ud = (self.tag << 32) | self.next_ud;
        self.next_ud += 1;
        ud
    }
    pub fn new_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// Remembers what a step did (the last 80 entries are printed with a
    /// failure).
    pub fn log(&mut self, what: String) {
        if self.history.len() >= 80 {
            self.history.pop_front();
        }
        self.history.push_back(format!("{:>4} {what}", self.step));
    }

    pub fn history_text(&self) -> String {
        self.history.iter().map(|l| format!("\n    {l}")).collect()
    }

    // ---- picks -------------------------------------------------------------

    pub fn pick_file(&self, p: Pick) -> Option<usize> {
        sel(p, self.files.len())
    }

    /// A file with a descriptor, and one of its descriptors.
    pub fn pick_fd_file(&self, file: Pick, fd: Pick) -> Option<(usize, i32)> {
        let with: Vec<usize> = (0..self.files.len()).filter(|&i| !self.files[i].fds.is_empty()).collect();
        let fi = with[sel(file, with.len())?];
        Some((fi, self.fd_of(fi, fd)?))
    }

    pub fn fd_of(&self, fi: usize, p: Pick) -> Option<i32> {
        let fds = &self.files[fi].fds;
        sel(p, fds.len()).map(|i| fds[i])
    }

    pub fn pick_buf(&self, p: Pick) -> Option<usize> {
        sel(p, self.bufs.len())
    }

    /// A run of consecutive mapped pages of buffer `bi`: `(first, count)`.
    pub fn pick_mapped_run(&self, bi: usize, run: super::op::Run) -> Option<(usize, usize)> {
        let b = &self.bufs[bi];
        let mapped: Vec<usize> = (0..b.pages()).filter(|&p| b.prot[p] != GONE).collect();
        let p = mapped[sel(run.at, mapped.len())?];
        let (mut lo, mut hi) = (p, p + 1);
        while lo > 0 && b.prot[lo - 1] != GONE {
            lo -= 1;
        }
        while hi < b.pages() && b.prot[hi] != GONE {
            hi += 1;
        }
        let first = lo + run.first as usize % (p - lo + 1);
        let count = 1 + run.count as usize % (hi - first);
        Some((first, count))
    }

    /// A ring mapping of any file: `(file, ring)`.
    pub fn pick_ring(&self, p: Pick) -> Option<(usize, usize)> {
        let all: Vec<(usize, usize)> =
            (0..self.files.len()).flat_map(|fi| (0..self.files[fi].rings.len()).map(move |ri| (fi, ri))).collect();
        sel(p, all.len()).map(|i| all[i])
    }

    pub fn slot_addr(&self, slot: usize) -> u64 {
        self.window + (slot * SLOT_BYTES) as u64
    }
    pub fn in_window(&self, a: u64, l: u64) -> bool {
        overlaps(a, l.max(1), self.window, (WIN_SLOTS * SLOT_BYTES) as u64)
    }
    pub fn free_slot(&self, p: Pick) -> Option<usize> {
        let free: Vec<usize> = (1..WILD_SLOT).filter(|&s| !self.win_used[s]).collect();
        sel(p, free.len()).map(|i| free[i])
    }

    /// What the fuzzer knows about the memory at `a` for file `fi`.
    pub fn explain(&self, fi: usize, a: u64) -> String {
        let mut out = format!("{a:#x}:");
        for r in self.files[fi].regs.iter().filter(|r| r.addr <= a && a < r.addr + r.len) {
            out += &format!(
                " region {:#x}+{:#x} access {} handle {:#x} clean {} dst_ok {};",
                r.addr, r.len, r.access, r.handle, r.clean, r.dst_ok
            );
        }
        for b in self.bufs.iter().filter(|b| b.addr <= a && a < b.end()) {
            let p = ((a - b.addr) / PAGE64) as usize;
            out += &format!(
                " buffer {} {:#x}+{:#x} ({}, page {p} prot {});",
                b.id,
                b.addr,
                b.len,
                if b.shared { "shared" } else { "private" },
                b.prot[p]
            );
        }
        if self.in_tomb(a, 1) {
            out += " tombstone;";
        }
        out
    }

    // ---- the model of buffer contents --------------------------------------

    pub fn buf_containing(&self, a: u64, l: u64) -> Option<usize> {
        self.bufs.iter().position(|b| a >= b.addr && a.checked_add(l).is_some_and(|e| e <= b.end()))
    }

    pub fn mark_unknown(&mut self, a: u64, l: u64) {
        for b in &mut self.bufs {
            if overlaps(a, l, b.addr, b.len as u64) {
                let lo = a.max(b.addr) - b.addr;
                let hi = a.saturating_add(l).min(b.end()) - b.addr;
                b.known[lo as usize..hi as usize].fill(false);
            }
        }
    }

    pub fn model_bytes(&self, a: u64, l: u64) -> Option<Vec<u8>> {
        let bi = self.buf_containing(a, l)?;
        let b = &self.bufs[bi];
        let o = (a - b.addr) as usize;
        let r = o..o + l as usize;
        b.known[r.clone()].iter().all(|&k| k).then(|| b.model[r].to_vec())
    }

    pub fn model_fill(&mut self, a: u64, l: u64, v: u8) {
        match self.buf_containing(a, l) {
            Some(bi) => {
                let b = &mut self.bufs[bi];
                let o = (a - b.addr) as usize;
                b.model[o..o + l as usize].fill(v);
                b.known[o..o + l as usize].fill(true);
            }
            None => self.mark_unknown(a, l),
        }
    }

    /// COPY: memmove semantics (the engine orders its page-bounded pieces
    /// so that overlapping ranges copy as one memmove).
    pub fn model_copy(&mut self, src: u64, dst: u64, len: u64) {
        let (Some(si), Some(di)) = (self.buf_containing(src, len), self.buf_containing(dst, len)) else {
            self.mark_unknown(dst, len);
            return;
        };
        let so = (src - self.bufs[si].addr) as usize;
        let d = (dst - self.bufs[di].addr) as usize;
        let n = len as usize;
        let bytes = self.bufs[si].model[so..so + n].to_vec();
        let known = self.bufs[si].known[so..so + n].to_vec();
        self.bufs[di].model[d..d + n].copy_from_slice(&bytes);
        self.bufs[di].known[d..d + n].copy_from_slice(&known);
    }

    /// Nothing but the CPU can change (or is reading) `[a, a + l)` now.
    pub fn quiet(&self, a: u64, l: u64) -> bool {
        for f in self.files.iter().chain(self.zombies.iter()) {
            if f.fifo.iter().any(|c| cmd_touches(&c.s, a, l)) {
                return false;
            }
        }
        for f in self.files.iter().filter(|f| f.garbage).chain(self.zombies.iter()) {
            if f.regs.iter().any(|r| r.access & WARPQ_ACCESS_WRITE != 0 && overlaps(r.addr, r.len, a, l)) {
                return false;
            }
        }
        let shared = self.bufs.iter().any(|b| b.shared && overlaps(b.addr, b.len as u64, a, l));
        !(shared && (self.child || !self.children.is_empty()))
    }

    /// Outstanding commands touching `[a, a + l)` (of file `only`, or all)
    /// lose their status prediction and/or their content guarantee.
    pub fn taint(&mut self, a: u64, l: u64, t: Taint, only: Option<usize>) {
        let nfiles = self.files.len();
        for (i, f) in self.files.iter_mut().chain(self.zombies.iter_mut()).enumerate() {
            if only.is_some_and(|o| o != i || i >= nfiles) {
                continue;
            }
            for c in f.fifo.iter_mut().filter(|c| cmd_touches(&c.s, a, l)) {
                if matches!(t, Taint::Status | Taint::Both) {
                    c.status = None;
                }
                if matches!(t, Taint::Content | Taint::Both) {
                    c.content_ok = false;
                }
            }
        }
    }

    /// An mm operation on `[a, a + l)` can kill every region overlapping it
    /// (a rebuild pins a region whole): the outstanding commands touching
    /// any of those regions lose their status prediction.
    pub fn taint_regions(&mut self, a: u64, l: u64) {
        for f in self.files.iter_mut().chain(self.zombies.iter_mut()) {
            let spans: Vec<(u64, u64)> =
                f.regs.iter().filter(|r| overlaps(r.addr, r.len, a, l)).map(|r| (r.addr, r.len)).collect();
            for c in f.fifo.iter_mut() {
                if spans.iter().any(|&(ra, rl)| cmd_touches(&c.s, ra, rl)) {
                    c.status = None;
                }
            }
        }
    }

    pub fn regs_dirty(&mut self, a: u64, l: u64) {
        for f in self.files.iter_mut().chain(self.zombies.iter_mut()) {
            for r in f.regs.iter_mut().filter(|r| overlaps(r.addr, r.len, a, l)) {
                r.clean = false;
            }
        }
    }

    pub fn in_tomb(&self, a: u64, l: u64) -> bool {
        self.tombs.iter().any(|&(t, tl)| overlaps(t, tl, a, l))
    }

    /// Compares the known bytes of buffer `bi`'s readable pages with the
    /// model, then adopts what it read for the bytes the model had lost
    /// (the caller checked nothing else can be writing them).
    pub fn verify_buf(&mut self, bi: usize) -> Res {
        let mut checked = 0;
        let mut got = vec![0u8; PAGE];
        let b = &mut self.bufs[bi];
        for p in 0..b.pages() {
            if b.prot[p] == GONE || b.prot[p] & RD == 0 {
                continue;
            }
            let o = p * PAGE;
            // SAFETY: the page is mapped readable (tracked in `prot`).
            unsafe { read_mem(b.addr + o as u64, &mut got) };
            for i in 0..PAGE {
                if !b.known[o + i] {
                    b.model[o + i] = got[i];
                    b.known[o + i] = true;
                    continue;
                }
                checked += 1;
                if got[i] != b.model[o + i] {
                    let run = (i..PAGE).take_while(|&j| b.known[o + j] && got[j] != b.model[o + j]).count();
                    return Err(format!(
                        "buffer {} ({}, {} pages at {:#x}) byte {:#x}: {:#04x}, the model says {:#04x} ({run} bytes differ from there)",
                        b.id,
                        if b.shared { "shared" } else { "private" },
                        b.pages(),
                        b.addr,
                        o + i,
                        got[i],
                        b.model[o + i]
                    ));
                }
            }
        }
        self.n.verified += checked;
        Ok(())
    }

    pub fn verify_all_quiet(&mut self) -> Res {
        for bi in 0..self.bufs.len() {
            let b = &self.bufs[bi];
            if self.quiet(b.addr, b.len as u64) {
                self.verify_buf(bi)?;
            }
        }
        Ok(())
    }

    /// Every page of `[a, a + l)` is a buffer or a tombstone: memory nothing
    /// but this program's buffers will ever occupy.
    pub fn owned(&self, a: u64, l: u64) -> bool {
        let mut p = a;
        while p < a.saturating_add(l) {
            let b = self.bufs.iter().any(|b| p >= b.addr && p < b.end());
            if !b && !self.in_tomb(p, 1) {
                return false;
            }
            p += PAGE64;
        }
        l > 0
    }

    /// Records a published command of file `fi` (sane rings only).
    pub fn outstanding(&mut self, fi: usize, s: warpq_sqe) {
        let status = self.predict(fi, &s);
        let content_ok = self.content_ok(fi, &s);
        self.files[fi].fifo.push_back(Cmd { s, status, content_ok });
        self.n.commands += 1;
    }

    /// The ring of file `fi` can no longer be trusted (garbage indices, or
    /// entries whose number is unknown).
    pub fn enter_garbage(&mut self, fi: usize) {
        let step = self.step;
        let f = &mut self.files[fi];
        let pending: Vec<warpq_sqe> = f.fifo.drain(..).map(|c| c.s).collect();
        let regs: Vec<(u64, u64)> =
            f.regs.iter().filter(|r| r.access & WARPQ_ACCESS_WRITE != 0).map(|r| (r.addr, r.len)).collect();
        if !f.garbage {
            f.garbage_since = step;
        }
        f.garbage = true;
        f.c_off = None;
        f.tail = None;
        self.n.garbage += 1;
        for s in pending {
            if let (_, Some((a, l))) = touches(&s) {
                self.mark_unknown(a, l);
            }
        }
        for (a, l) in regs {
            self.mark_unknown(a, l);
            // Another file's command still queued over these bytes must not
            // make them known again when it completes: this ring may still
            // rewrite them.
            self.taint(a, l, Taint::Content, None);
        }
    }

    /// The file's last reference is gone: its queue is torn down.
    pub fn release_file(&mut self, fi: usize) {
        let f = self.files.remove(fi);
        for c in &f.fifo {
            if let (_, Some((a, l))) = touches(&c.s) {
                self.mark_unknown(a, l);
            }
        }
        if f.garbage {
            for r in f.regs.iter().filter(|r| r.access & WARPQ_ACCESS_WRITE != 0) {
                self.mark_unknown(r.addr, r.len);
            }
        }
        if f.inherited && !self.children.is_empty() {
            self.zombies.push(f);
        }
    }
}
