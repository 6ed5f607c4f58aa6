//! Applying operations: each [`Op`] becomes system calls on the model's
//! files, mappings and buffers, with the oracle's expectation computed
//! before a call and its checks made after. Nothing here draws a random
//! number: every [`Pick`](super::op::Pick) is reduced modulo what exists
//! when the operation runs.
//!
//! An operation that finds nothing to act on does nothing, or runs a
//! fallback built from its own fields (as the fuzzer always did, so that a
//! run keeps going):
//!
//! | operation | finds | runs instead |
//! |---|---|---|
//! | ioctls, `dup` | no file with a descriptor | `open rdonly=0` |
//! | `REGISTER` | no buffer | a fresh private buffer of `1 + buf % 16` pages |
//! | buffer operations | no buffer | the same |
//! | `new-buffer` | 8 buffers already | `cpu-write` with picks from its seed |
//! | `mremap-buffer` | a split or protected buffer | `dontneed-buffer` of its `run` |
//! | `mmap-ring` | no file / 5 rings | `open rdonly=0` / `munmap-ring` of the whole ring `file` |
//! | ring-mapping operations | no ring | `mmap-ring` read/write of file `ring` |
//! | `ring-submit` | no file / no read/write ring | `open rdonly=0` / that `mmap-ring` |
//! | `garbage-tail`, `corrupt-header` | no file | `open rdonly=0` |

mod ioctl;
mod mem;
mod proc;
mod ring;

use super::model::{red, World};
use super::op::{Arg, MapHow, Op, Pick, Place, Size};
use super::sys::{as_bytes, ename, from_bytes, reserve, sys_ioctl, sys_mprotect, sys_munmap, Hdr, Plain};
use super::text::op_line;
use super::{Res, CANARY, H_SQ_TAIL, KERNEL_ADDR, PAGE, PAGE64, RD, RW, WILD_SLOT};

/// `open rdonly=0`.
const OPEN: Op = Op::Open { rdonly: false };

/// A fresh private buffer of `1 + p % 16` pages.
fn default_buf(p: Pick) -> Op {
    Op::NewBuf { tomb: None, pages: 1 + (p % 16) as u8, shared: false, seed: u64::from(p) }
}

/// A read/write mapping of the ring of file `p`.
fn default_map(p: Pick) -> Op {
    Op::MapRing { file: p, fd: 0, how: MapHow::Map { slot: p, rw: true } }
}

impl World<'_> {
    /// Applies one operation (its checks included).
    pub fn apply(&mut self, op: &Op) -> Res {
        let mut line = op_line(op);
        if line.len() > 160 {
            line.truncate(157);
            line += "...";
        }
        self.log(line);
        match op {
            Op::Open { rdonly } => self.open(*rdonly),
            Op::Dup { file, fd } => self.dup(*file, *fd),
            Op::Close { file, fd } => self.close(*file, *fd),
            Op::NewBuf { tomb, pages, shared, seed } => self.new_buf(*tomb, *pages, *shared, *seed),
            Op::CpuWrite { buf, first, count, seed } => self.cpu_write(*buf, *first, *count, *seed),
            Op::CpuVerify { buf } => match self.pick_buf(*buf) {
                Some(bi) if self.quiet(self.bufs[bi].addr, self.bufs[bi].len as u64) => self.verify_buf(bi),
                _ => Ok(()),
            },
            Op::UnmapBuf { buf, run } => self.unmap_buf(*buf, *run),
            Op::MprotectBuf { buf, run, prot } => self.mprotect_buf(*buf, *run, *prot),
            Op::MremapBuf { buf, grow, run } => self.mremap_buf(*buf, *grow, *run),
            Op::DontneedBuf { buf, run } => self.dontneed_buf(*buf, *run),
            Op::MapRing { file, fd, how } => self.map_ring(*file, *fd, *how),
            Op::UnmapRing { ring, pages } => self.unmap_ring(*ring, *pages),
            Op::MprotectRing { ring, pages, prot } => self.mprotect_ring(*ring, *pages, *prot),
            Op::MremapRing { ring, how } => self.mremap_ring(*ring, *how),
            Op::DontneedRing { ring } => self.dontneed_ring(*ring),
            Op::Info { file, fd, arg } => self.info(*file, *fd, *arg),
            Op::Stats { file, fd, arg } => self.stats(*file, *fd, *arg),
            Op::Wait { file, fd, arg, min_ready, timeout_ns } => self.wait(*file, *fd, *arg, *min_ready, *timeout_ns),
            Op::Wake { file, fd, arg } => self.wake_op(*file, *fd, *arg),
            Op::UnknownIoctl { file, fd, cmd } => self.unknown_ioctl(*file, *fd, *cmd),
            Op::Register { file, fd, buf, range, access, arg } => {
                self.register(*file, *fd, *buf, *range, *access, *arg)
            }
            Op::Unregister { file, fd, handle, arg } => self.unregister(*file, *fd, *handle, *arg),
            Op::Submit { file, fd, sqes, at, arg } => self.submit(*file, *fd, sqes, *at, *arg),
            Op::RingSubmit { file, fd, sqes, wake, resync, start, tail } => {
                self.ring_submit(*file, *fd, sqes, *wake, *resync, *start, *tail)
            }
            Op::Drain { file, fd } => match self.pick_file(*file) {
                Some(fi) if self.files[fi].garbage => self.resync(fi, *fd),
                Some(fi) => self.drain(fi, *fd),
                None => Ok(()),
            },
            Op::GarbageTail { file, tail } => self.garbage_tail(*file, *tail),
            Op::CorruptHeader { file, field, change } => self.corrupt_header(*file, *field, *change),
            Op::Resync { file, fd } => match self.pick_file(*file) {
                Some(fi) => self.resync(fi, *fd),
                None => Ok(()),
            },
            Op::Fork { tag, end, ops } => self.fork_child(*tag, *end, ops),
            Op::ExitNow {} => self.child_exit(true),
            // The run applies the finish itself, after the last step.
            Op::Finish { .. } => Ok(()),
        }
    }

    /// Invariants after every step.
    pub fn after_step(&mut self) -> Res {
        for fi in 0..self.files.len() {
            self.reap(fi)?;
        }
        for fi in 0..self.files.len() {
            let f = &self.files[fi];
            // Readable mappings of one queue alias the same pages.
            let tails: Vec<u32> =
                f.rings.iter().filter(|r| r.readable()).map(|r| Hdr(r.addr).load(H_SQ_TAIL)).collect();
            if tails.windows(2).any(|w| w[0] != w[1]) {
                return Err(format!("file {}: two mappings of one queue show different sq_tails {tails:?}", f.id));
            }
            if f.garbage && self.step.saturating_sub(f.garbage_since) > 40 {
                self.resync(fi, 0)?;
            }
        }
        // A file left with ring mappings and no descriptor cannot be woken
        // or resynchronised: now and then let it go (its last unmap
        // releases it), or its commands would keep its buffers busy.
        if self.step % 32 == 31 {
            let stuck = self.files.iter().position(|f| f.fds.is_empty());
            if let Some(fi) = stuck {
                self.log(format!("  file {}: letting go of its rings", self.files[fi].id));
                for r in std::mem::take(&mut self.files[fi].rings) {
                    sys_munmap(r.addr, warpq::sys::WARPQ_RING_SIZE)
                        .map_err(|e| format!("munmap ring: {}", ename(e)))?;
                    reserve(r.addr, warpq::sys::WARPQ_RING_SIZE)?;
                    self.win_used[r.slot] = false;
                }
                self.release_file(fi);
            }
        }
        if self.step & 3 == 0 {
            self.verify_all_quiet()?;
        }
        if !self.child {
            self.reap_children(false)?;
        }
        Ok(())
    }

    // ---- ioctl plumbing ----------------------------------------------------

    /// The declared size `size` means for a structure of version 1 size `v1`.
    fn size_field(size: Size, v1: usize) -> u32 {
        let v1 = v1 as u32;
        match size {
            Size::V1 => v1,
            Size::Above(n) => v1 + 1 + u32::from(n),
            Size::Far(n) => v1 + u32::from(n),
            Size::Max => u32::MAX,
            Size::Below(p) => red(u64::from(p), u64::from(v1)) as u32,
            Size::Zero => 0,
        }
    }

    /// The ioctl number with the argument's size bits, if it says so.
    fn cmd_bits(arg: Arg, cmd: libc::c_ulong) -> libc::c_ulong {
        match arg.bits {
            Some(b) => (cmd & !(0x3fff << 16)) | (libc::c_ulong::from(b & 0x3fff) << 16),
            None => cmd,
        }
    }

    /// Places `val` as `place` says, calls the ioctl, reads the structure
    /// back and checks the kernel wrote nothing around it.
    fn call<T: Plain>(&mut self, fd: i32, cmd: libc::c_ulong, val: &mut T, place: Place) -> Res<Result<(), i32>> {
        let sz = std::mem::size_of::<T>();
        assert!(sz <= PAGE, "an ioctl argument must fit in the scratch page");
        let page0 = self.window;
        let page1 = self.window + PAGE64;
        let offset = |p: Pick| 8 * (p as usize % ((PAGE - sz) / 8 + 1));
        self.n.ioctls += 1;
        match place {
            Place::Normal(p) => {
                let off = offset(p);
                let mut page = vec![CANARY; PAGE];
                page[off..off + sz].copy_from_slice(as_bytes(val));
                // SAFETY: page 0 of the scratch slot is mapped read/write and
                // only ever accessed through raw pointers.
                unsafe { super::sys::write_mem(page0, &page) };
                let r = sys_ioctl(fd, cmd, page0 + off as u64);
                // SAFETY: as above.
                unsafe { super::sys::read_mem(page0, &mut page) };
                *val = from_bytes(&page[off..off + sz]);
                if let Some(i) = page[..off].iter().chain(&page[off + sz..]).position(|&b| b != CANARY) {
                    let at = if i < off { i as i64 - off as i64 } else { (i + sz - off) as i64 };
                    return Err(format!(
                        "ioctl {cmd:#x} wrote outside its {sz}-byte structure (byte {at} from its start)"
                    ));
                }
                Ok(r)
            }
            Place::ReadOnly(p) | Place::Straddle(p) => {
                let (off, n) = if let Place::ReadOnly(_) = place {
                    (offset(p), sz)
                } else {
                    let k = if sz > 8 { 8 + 8 * (p as usize % ((sz - 9) / 8 + 1)) } else { 4 };
                    (PAGE - k, k.min(sz))
                };
                sys_mprotect(page1, PAGE, RW).map_err(|e| format!("scratch: {}", ename(e)))?;
                // SAFETY: page 1 of the scratch slot is read/write right now.
                unsafe { super::sys::write_mem(page1 + off as u64, &as_bytes(val)[..n]) };
                sys_mprotect(page1, PAGE, RD).map_err(|e| format!("scratch: {}", ename(e)))?;
                Ok(sys_ioctl(fd, cmd, page1 + off as u64))
            }
            Place::Null => Ok(sys_ioctl(fd, cmd, 0)),
            Place::Wild(w) => {
                let wild = [KERNEL_ADDR, self.slot_addr(WILD_SLOT), u64::MAX - 7, 1];
                Ok(sys_ioctl(fd, cmd, wild[w as usize % wild.len()]))
            }
        }
    }
}
