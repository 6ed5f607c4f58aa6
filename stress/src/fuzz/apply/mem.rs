//! Descriptors (open, dup, close), buffers (map, CPU writes, munmap,
//! mprotect, mremap, DONTNEED) and ring mappings (mmap, refused mmaps,
//! munmap, mprotect, mremap, DONTNEED).

use warpq::sys::*;

use super::super::model::{red, Buf, FileSt, RingMap, Taint, World};
use super::super::op::{BufProt, MapHow, MremapHow, Op, Pages, Pick, RingProt, Run};
use super::super::oracle::show;
use super::super::sys::{
    ename, errno, mmap_anon, mmap_refused, mmap_ring, reserve, sys_madvise, sys_mprotect, sys_mremap, sys_munmap,
    write_mem, Hdr,
};
use super::super::{
    overlaps, pattern, Res, GONE, MAX_BUFS, MAX_FDS, MAX_FILES, MAX_RINGS, NONE, PAGE, PAGE64, RD, RING_PAGES, RW,
    SLOT_BYTES,
};
use super::{default_buf, default_map, OPEN};

impl World<'_> {
    pub(super) fn open(&mut self, rdonly: bool) -> Res {
        if self.files.len() >= MAX_FILES {
            return Ok(());
        }
        let flags = if rdonly { libc::O_RDONLY } else { libc::O_RDWR };
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(self.cfg.path.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open {:?}: {}", self.cfg.path, ename(errno())));
        }
        let id = self.new_id();
        self.log(format!("  file {id}: fd {fd}{}", if rdonly { " read-only" } else { "" }));
        self.files.push(FileSt::new(id, fd, rdonly));
        Ok(())
    }

    pub(super) fn dup(&mut self, file: Pick, fd: Pick) -> Res {
        let Some((fi, fd)) = self.pick_fd_file(file, fd) else {
            return self.apply(&OPEN);
        };
        if self.files[fi].fds.len() >= MAX_FDS {
            return Ok(());
        }
        // SAFETY: duplicating our own descriptor.
        let nfd = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if nfd < 0 {
            return Err(format!("dup: {}", ename(errno())));
        }
        self.log(format!("  file {}: fd {nfd}", self.files[fi].id));
        self.files[fi].fds.push(nfd);
        Ok(())
    }

    pub(super) fn close(&mut self, file: Pick, fd: Pick) -> Res {
        let Some((fi, fd)) = self.pick_fd_file(file, fd) else {
            return Ok(());
        };
        // SAFETY: closing our own descriptor (tracked; never reused here).
        if unsafe { libc::close(fd) } != 0 {
            return Err(format!("close: {}", ename(errno())));
        }
        self.files[fi].fds.retain(|&x| x != fd);
        self.log(format!("  file {}: closed fd {fd}", self.files[fi].id));
        if !self.files[fi].alive() {
            self.release_file(fi);
        }
        Ok(())
    }

    pub(super) fn new_buf(&mut self, tomb: Option<Pick>, pages: u8, shared: bool, seed: u64) -> Res {
        if self.bufs.len() >= MAX_BUFS {
            let (b, f, c) = (seed as u32, (seed >> 16) as u32, (seed >> 32) as u32);
            return self.apply(&Op::CpuWrite { buf: b, first: f, count: c, seed });
        }
        // Sometimes a buffer over a tombstone: stale registrations follow it.
        let reuse = tomb.and_then(|t| super::super::model::sel(t, self.tombs.len()));
        let (addr, pages) = if let Some(ti) = reuse {
            let (t, tl) = self.tombs[ti];
            if tl < PAGE64 || self.bufs.iter().any(|b| overlaps(b.addr, b.len as u64 + PAGE64, t, tl)) {
                return Ok(());
            }
            // The last page stays a tombstone: the new buffer's guard.
            let pages = (tl / PAGE64) as usize - 1;
            if pages == 0 {
                return Ok(());
            }
            let body = (pages * PAGE) as u64;
            self.tombs.retain(|&(a, l)| !overlaps(a, l, t, body));
            self.tombs.push((t + body, PAGE64));
            if mmap_anon(t, pages * PAGE, RW, shared, true) != Some(t) {
                return Err(format!("mmap over a tombstone at {t:#x}: {}", ename(errno())));
            }
            (t, pages)
        } else {
            let pages = usize::from(pages.max(1));
            let base = mmap_anon(0, (pages + 1) * PAGE, NONE, false, false)
                .ok_or_else(|| format!("mmap {} pages: {}", pages + 1, ename(errno())))?;
            if mmap_anon(base, pages * PAGE, RW, shared, true) != Some(base) {
                return Err(format!("mmap {pages} pages at {base:#x}: {}", ename(errno())));
            }
            self.tombs.push((base + (pages * PAGE) as u64, PAGE64));
            (base, pages)
        };
        let len = pages * PAGE;
        let model = pattern(seed, len);
        // SAFETY: freshly mapped read/write, `len` bytes.
        unsafe { write_mem(addr, &model) };
        let id = self.new_id();
        self.log(format!(
            "  buffer {id} at {addr:#x}, {pages} pages, {}{}",
            if shared { "shared" } else { "private" },
            if reuse.is_some() { ", over a tombstone" } else { "" }
        ));
        self.bufs.push(Buf {
            id,
            addr,
            len,
            shared,
            whole: true,
            prot: vec![RW; pages],
            model,
            known: vec![true; len],
        });
        Ok(())
    }

    pub(super) fn cpu_write(&mut self, buf: Pick, first: Pick, count: Pick, seed: u64) -> Res {
        let Some(bi) = self.pick_buf(buf) else {
            return Ok(());
        };
        let pages = self.bufs[bi].pages();
        let p0 = first as usize % pages;
        let n = 1 + count as usize % (pages - p0);
        let (a, l) = (self.bufs[bi].page_addr(p0), (n * PAGE) as u64);
        if !self.quiet(a, l) {
            return Ok(());
        }
        let data = pattern(seed, n * PAGE);
        self.log(format!("  buffer {} pages {p0}..{}", self.bufs[bi].id, p0 + n));
        let b = &mut self.bufs[bi];
        for p in p0..p0 + n {
            if b.prot[p] != RW {
                continue;
            }
            let o = p * PAGE;
            let src = &data[(p - p0) * PAGE..(p - p0 + 1) * PAGE];
            // SAFETY: the page is mapped read/write (tracked in `prot`).
            unsafe { write_mem(b.addr + o as u64, src) };
            b.model[o..o + PAGE].copy_from_slice(src);
            b.known[o..o + PAGE].fill(true);
        }
        Ok(())
    }

    pub(super) fn unmap_buf(&mut self, buf: Pick, run: Option<Run>) -> Res {
        let Some(bi) = self.pick_buf(buf) else {
            return self.apply(&default_buf(buf));
        };
        let (p0, n) = match run {
            None => (0, self.bufs[bi].pages()),
            Some(run) => match self.pick_mapped_run(bi, run) {
                Some(r) => r,
                None => return Ok(()),
            },
        };
        let (a, l) = (self.bufs[bi].page_addr(p0), n * PAGE);
        self.log(format!("  buffer {} pages {p0}..{} ({a:#x}+{l:#x})", self.bufs[bi].id, p0 + n));
        self.taint(a, l as u64, Taint::Both, None);
        self.taint_regions(a, l as u64);
        self.regs_dirty(a, l as u64);
        self.mark_unknown(a, l as u64);
        sys_munmap(a, l).map_err(|e| format!("munmap buffer: {}", ename(e)))?;
        reserve(a, l)?;
        self.tombs.push((a, l as u64));
        let b = &mut self.bufs[bi];
        b.prot[p0..p0 + n].fill(GONE);
        if n != b.pages() {
            b.whole = false;
        }
        if b.prot.iter().all(|&p| p == GONE) {
            self.bufs.remove(bi);
        }
        Ok(())
    }

    pub(super) fn mprotect_buf(&mut self, buf: Pick, run: Run, prot: BufProt) -> Res {
        let Some(bi) = self.pick_buf(buf) else {
            return self.apply(&default_buf(buf));
        };
        let Some((p0, n)) = self.pick_mapped_run(bi, run) else {
            return Ok(());
        };
        let prot = match prot {
            BufProt::Rd => RD,
            BufProt::None => NONE,
            BufProt::Rw => RW,
        };
        let (a, l) = (self.bufs[bi].page_addr(p0), n * PAGE);
        self.log(format!("  buffer {} pages {p0}..{} ({a:#x}+{l:#x}) to {prot:#x}", self.bufs[bi].id, p0 + n));
        self.taint(a, l as u64, Taint::Status, None);
        self.taint_regions(a, l as u64);
        self.regs_dirty(a, l as u64);
        sys_mprotect(a, l, prot).map_err(|e| format!("mprotect buffer: {}", ename(e)))?;
        let b = &mut self.bufs[bi];
        b.prot[p0..p0 + n].fill(prot);
        b.whole = false;
        Ok(())
    }

    pub(super) fn mremap_buf(&mut self, buf: Pick, grow: u8, run: Run) -> Res {
        let Some(bi) = self.pick_buf(buf) else {
            return self.apply(&default_buf(buf));
        };
        let b = &self.bufs[bi];
        if !b.whole || b.prot.iter().any(|&p| p != RW) {
            return self.dontneed_buf(buf, run);
        }
        let grow = if b.shared { 0 } else { usize::from(grow % 3) };
        let (old, old_len, new_len) = (b.addr, b.len, b.len + grow * PAGE);
        // The target: a fresh reservation one page longer, whose last page
        // stays as the moved buffer's guard.
        let ph = mmap_anon(0, new_len + PAGE, NONE, false, false).ok_or_else(|| format!("mmap: {}", ename(errno())))?;
        let quiet = self.quiet(old, old_len as u64);
        self.taint(old, old_len as u64, Taint::Both, None);
        self.taint(ph, new_len as u64, Taint::Both, None);
        self.taint_regions(old, old_len as u64);
        self.regs_dirty(old, old_len as u64);
        self.regs_dirty(ph, new_len as u64);
        match sys_mremap(old, old_len, new_len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, ph) {
            Ok(r) if r == ph => {}
            r => {
                return Err(format!(
                    "mremap buffer {old:#x}+{old_len:#x} to {ph:#x}+{new_len:#x}: {:?}",
                    r.map_err(ename)
                ))
            }
        }
        self.log(format!(
            "  buffer {} {old:#x}+{old_len:#x} to {ph:#x}+{new_len:#x} (quiet {quiet})",
            self.bufs[bi].id
        ));
        reserve(old, old_len)?;
        self.tombs.push((old, old_len as u64));
        self.tombs.push((ph + new_len as u64, PAGE64));
        let b = &mut self.bufs[bi];
        b.addr = ph;
        b.len = new_len;
        b.prot.resize(new_len / PAGE, RW);
        b.model.resize(new_len, 0);
        b.known.resize(new_len, true);
        if !quiet {
            b.known.fill(false);
        }
        Ok(())
    }

    pub(super) fn dontneed_buf(&mut self, buf: Pick, run: Run) -> Res {
        let Some(bi) = self.pick_buf(buf) else {
            return self.apply(&default_buf(buf));
        };
        let Some((p0, n)) = self.pick_mapped_run(bi, run) else {
            return Ok(());
        };
        let (a, l) = (self.bufs[bi].page_addr(p0), n * PAGE);
        let quiet = self.quiet(a, l as u64);
        self.log(format!("  buffer {} pages {p0}..{} ({a:#x}+{l:#x}) quiet {quiet}", self.bufs[bi].id, p0 + n));
        if !quiet {
            self.taint(a, l as u64, Taint::Content, None);
            self.mark_unknown(a, l as u64);
        }
        sys_madvise(a, l, libc::MADV_DONTNEED).map_err(|e| format!("madvise(DONTNEED) buffer: {}", ename(e)))?;
        let b = &mut self.bufs[bi];
        if quiet && !b.shared {
            // Private anonymous memory reads back as zeros; shared memory
            // keeps its contents.
            b.model[p0 * PAGE..(p0 + n) * PAGE].fill(0);
            b.known[p0 * PAGE..(p0 + n) * PAGE].fill(true);
        }
        Ok(())
    }

    // ---- ring mappings -----------------------------------------------------

    pub(super) fn map_ring(&mut self, file: Pick, fd: Pick, how: MapHow) -> Res {
        let Some(fi) = self.pick_file(file) else {
            return self.apply(&OPEN);
        };
        if self.files[fi].rings.len() >= MAX_RINGS {
            return self.apply(&Op::UnmapRing { ring: file, pages: Pages::Whole });
        }
        let Some(fd) = self.fd_of(fi, fd) else {
            return Ok(());
        };
        let rdonly = self.files[fi].rdonly;
        let (slot, rw) = match how {
            MapHow::Refused(k) => return self.map_refused(fd, k),
            MapHow::Map { slot, rw } => (slot, rw),
        };
        let Some(slot) = self.free_slot(slot) else {
            return Ok(());
        };
        let prot = if rw { RW } else { RD };
        let addr = self.slot_addr(slot);
        if let Err(e) = mmap_ring(addr, prot, fd) {
            reserve(addr, SLOT_BYTES)?;
            if rdonly && prot == RW && e == libc::EACCES {
                return Ok(());
            }
            return Err(format!("mmap of the ring (prot {prot:#x}): {}", ename(e)));
        }
        if rdonly && prot == RW {
            return Err("a read/write mmap of a read-only descriptor succeeded".into());
        }
        self.win_used[slot] = true;
        self.log(format!("  file {}: ring at {addr:#x} prot {prot:#x}", self.files[fi].id));
        self.files[fi].rings.push(RingMap { addr, slot, prot: [prot; RING_PAGES] });
        self.check_header(fi, Hdr(addr))
    }

    /// One of the mappings the driver must refuse.
    fn map_refused(&mut self, fd: i32, kind: u8) -> Res {
        let size = WARPQ_RING_SIZE;
        let (len, prot, flags, off, want) = match kind % 5 {
            0 => (size, RW, libc::MAP_PRIVATE, 0, libc::EINVAL),
            1 => (size + PAGE, RD, libc::MAP_SHARED, 0, libc::EINVAL),
            2 => (size - PAGE, RD, libc::MAP_SHARED, 0, libc::EINVAL),
            3 => (size, RD, libc::MAP_SHARED, PAGE as i64, libc::EINVAL),
            _ => (size, RD | libc::PROT_EXEC, libc::MAP_SHARED, 0, libc::EPERM),
        };
        match mmap_refused(len, prot, flags, fd, off) {
            Ok(()) => Err(format!(
                "mmap of the device (len {len:#x} prot {prot:#x} flags {flags:#x} offset {off:#x}) succeeded"
            )),
            Err(e) if e == want || (want == libc::EPERM && e == libc::EACCES) => Ok(()),
            Err(e) => Err(format!("refused mmap of the device: {}, expected {}", ename(e), ename(want))),
        }
    }

    fn drop_ring_if_gone(&mut self, fi: usize, ri: usize) {
        if !self.files[fi].rings[ri].any_mapped() {
            let r = self.files[fi].rings.remove(ri);
            self.win_used[r.slot] = false;
            if !self.files[fi].alive() {
                self.release_file(fi);
            }
        }
    }

    /// `(first page, pages)` of a ring mapping.
    fn ring_pages(pages: Pages) -> (usize, usize) {
        match pages {
            Pages::Whole => (0, RING_PAGES),
            Pages::Part { first, count } => {
                let p0 = usize::from(first) % RING_PAGES;
                (p0, 1 + usize::from(count) % (RING_PAGES - p0))
            }
        }
    }

    /// munmap of a queue mapping: whole, or (refused: the driver's
    /// `may_split` says EINVAL) part of it.
    pub(super) fn unmap_ring(&mut self, ring: Pick, pages: Pages) -> Res {
        let Some((fi, ri)) = self.pick_ring(ring) else {
            return self.apply(&default_map(ring));
        };
        let (p0, n) = Self::ring_pages(pages);
        let a = self.files[fi].rings[ri].addr + (p0 * PAGE) as u64;
        let got = sys_munmap(a, n * PAGE);
        if n != RING_PAGES {
            if got != Err(libc::EINVAL) {
                return Err(format!(
                    "munmap of ring pages {p0}..{}: {}, expected EINVAL (queue mappings do not split)",
                    p0 + n,
                    show(got)
                ));
            }
            return self.check_ring(fi, ri);
        }
        got.map_err(|e| format!("munmap ring: {}", ename(e)))?;
        self.log(format!("  file {}: unmapped ring at {a:#x}", self.files[fi].id));
        reserve(a, n * PAGE)?;
        self.files[fi].rings[ri].prot.fill(GONE);
        self.drop_ring_if_gone(fi, ri);
        Ok(())
    }

    /// The header through mapping `ri`, if it is readable.
    fn check_ring(&mut self, fi: usize, ri: usize) -> Res {
        if self.files[fi].rings[ri].readable() {
            let h = Hdr(self.files[fi].rings[ri].addr);
            self.check_header(fi, h)?;
        }
        Ok(())
    }

    pub(super) fn mprotect_ring(&mut self, ring: Pick, pages: Pages, prot: RingProt) -> Res {
        let Some((fi, ri)) = self.pick_ring(ring) else {
            return self.apply(&default_map(ring));
        };
        let (p0, n) = Self::ring_pages(pages);
        let prot = match prot {
            RingProt::Rd => RD,
            RingProt::None => NONE,
            RingProt::Rw => RW,
            RingProt::RdExec => RD | libc::PROT_EXEC,
        };
        let cur = self.files[fi].rings[ri].prot[0];
        let want = if prot & libc::PROT_EXEC != 0 || (prot == RW && self.files[fi].rdonly) {
            Err(libc::EACCES)
        } else if n != RING_PAGES && prot != cur {
            Err(libc::EINVAL)
        } else {
            Ok(())
        };
        let a = self.files[fi].rings[ri].addr + (p0 * PAGE) as u64;
        let got = sys_mprotect(a, n * PAGE, prot);
        if got != want {
            return Err(format!(
                "mprotect ring pages {p0}..{} from {cur:#x} to {prot:#x}: {}, expected {}",
                p0 + n,
                show(got),
                show(want)
            ));
        }
        if got.is_ok() {
            self.files[fi].rings[ri].prot.fill(prot);
        }
        self.check_ring(fi, ri)
    }

    /// mremap of a queue mapping: the driver refuses moves (`->mremap`) and
    /// splits (a shrink), VM_DONTEXPAND refuses growth; the mapping must
    /// stay as it was.
    pub(super) fn mremap_ring(&mut self, ring: Pick, how: MremapHow) -> Res {
        let Some((fi, ri)) = self.pick_ring(ring) else {
            return self.apply(&default_map(ring));
        };
        let old = self.files[fi].rings[ri].addr;
        let size = WARPQ_RING_SIZE;
        let (what, got, want, to) = match how {
            MremapHow::Move(slot) => {
                let Some(slot) = self.free_slot(slot) else {
                    return Ok(());
                };
                let to = self.slot_addr(slot);
                // Refused; the slot is reserved again below.
                let got = sys_mremap(old, size, size, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to);
                ("move", got, libc::EINVAL, Some(to))
            }
            MremapHow::Grow => ("grow", sys_mremap(old, size, size + PAGE, 0, 0), libc::EFAULT, None),
            MremapHow::Shrink(k) => {
                let k = 1 + red(u64::from(k), RING_PAGES as u64 - 1) as usize;
                ("shrink", sys_mremap(old, size, (RING_PAGES - k) * PAGE, 0, 0), libc::EINVAL, None)
            }
        };
        if let Some(to) = to {
            // MREMAP_FIXED unmaps the target first: keep the window reserved.
            if got.is_ok() {
                let _ = sys_munmap(to, size);
            }
            reserve(to, SLOT_BYTES)?;
        }
        match got {
            Ok(_) => Err(format!("mremap ({what}) of a queue mapping succeeded")),
            Err(e) if e != want => {
                Err(format!("mremap ({what}) of a queue mapping: {}, expected {}", ename(e), ename(want)))
            }
            Err(_) => self.check_ring(fi, ri),
        }
    }

    pub(super) fn dontneed_ring(&mut self, ring: Pick) -> Res {
        let Some((fi, ri)) = self.pick_ring(ring) else {
            return self.apply(&default_map(ring));
        };
        let r = self.files[fi].rings[ri].clone();
        for p in 0..RING_PAGES {
            if r.prot[p] != GONE {
                sys_madvise(r.addr + (p * PAGE) as u64, PAGE, libc::MADV_DONTNEED)
                    .map_err(|e| format!("madvise(DONTNEED) ring page {p}: {}", ename(e)))?;
            }
        }
        if r.readable() {
            self.check_header(fi, Hdr(r.addr))?;
        }
        Ok(())
    }
}
