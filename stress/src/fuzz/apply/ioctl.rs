//! The ioctls: INFO, STATS, WAIT, WAKE, unknown numbers, REGISTER,
//! UNREGISTER and SUBMIT, each with its argument placed and sized as the
//! operation says.

use std::time::{Duration, Instant};

use warpq::sys::*;

use super::super::model::{red, sel, Reg, Taint, World};
use super::super::op::{Arg, Handle, Pick, Place, RegRange, Sqe, SubmitAt};
use super::super::oracle::{
    arg_expect, check, show, Expect, E_INFO, E_REGISTER, E_STATS, E_SUBMIT, E_UNKNOWN, E_UNREGISTER, E_WAIT, E_WAKE,
};
use super::super::sys::{as_bytes, ename, sys_mprotect, InfoBuf, StatsBuf};
use super::super::{
    Res, H_CQ_HEAD, H_CQ_TAIL, H_SQ_HEAD, H_SQ_TAIL, INFO_V1, KERNEL_ADDR, PAGE, PAGE64, RD, RING64, RW, STATS_V1,
};
use super::{default_buf, OPEN};

impl World<'_> {
    pub(super) fn info(&mut self, file: Pick, fd: Pick, arg: Arg) -> Res {
        let Some((_, fd)) = self.pick_fd_file(file, fd) else {
            return self.apply(&OPEN);
        };
        let mut b = InfoBuf::default();
        b.i.size = Self::size_field(arg.size, INFO_V1);
        let declared = b.i.size as usize;
        let got = self.call(fd, Self::cmd_bits(arg, WARPQ_IOC_INFO), &mut b, arg.place)?;
        check("INFO", E_INFO, got, &arg_expect(arg.place, declared >= INFO_V1, true, Expect::Ok))?;
        if got.is_ok() && matches!(arg.place, Place::Normal(_)) {
            self.check_info(declared, &b)?;
        }
        Ok(())
    }

    pub(super) fn stats(&mut self, file: Pick, fd: Pick, arg: Arg) -> Res {
        let Some((fi, fd)) = self.pick_fd_file(file, fd) else {
            return self.apply(&OPEN);
        };
        let mut b = StatsBuf::default();
        b.s.size = Self::size_field(arg.size, STATS_V1);
        let declared = b.s.size as usize;
        let got = self.call(fd, Self::cmd_bits(arg, WARPQ_IOC_STATS), &mut b, arg.place)?;
        check("STATS", E_STATS, got, &arg_expect(arg.place, declared >= STATS_V1, true, Expect::Ok))?;
        if got.is_ok() && matches!(arg.place, Place::Normal(_)) {
            self.check_stats(fi, declared, &b)?;
        }
        Ok(())
    }

    pub(super) fn wait(&mut self, file: Pick, fd: Pick, arg: Arg, min_ready: u32, timeout_ns: i64) -> Res {
        let Some((fi, fd)) = self.pick_fd_file(file, fd) else {
            return self.apply(&OPEN);
        };
        let mut v = warpq_wait { size: Self::size_field(arg.size, 24), min_ready, timeout_ns, ..Default::default() };
        let size_ok = v.size >= 24;
        let ring = self.files[fi].read_ring().filter(|_| !self.files[fi].garbage);
        let ready = |h: super::super::sys::Hdr| h.load(H_CQ_TAIL).wrapping_sub(h.load(H_CQ_HEAD)).min(WARPQ_CQ_ENTRIES);
        let before = ring.map(ready);
        let t0 = Instant::now();
        let got = self.call(fd, Self::cmd_bits(arg, WARPQ_IOC_WAIT), &mut v, arg.place)?;
        let took = t0.elapsed();
        check("WAIT", E_WAIT, got, &arg_expect(arg.place, size_ok, true, Expect::Ok))?;
        // Slack for the rebuilds WAIT runs before it sleeps (seconds for a
        // large region on a KASAN kernel under TCG), not for a lost wake-up.
        let limit = Duration::from_nanos(timeout_ns.clamp(0, 1_000_000_000) as u64) + Duration::from_secs(15);
        if ((0..1_000_000_000).contains(&timeout_ns) || min_ready == 0) && took > limit {
            return Err(format!("WAIT(min_ready {min_ready}, timeout {timeout_ns} ns) took {took:?}"));
        }
        if got.is_ok() && matches!(arg.place, Place::Normal(_)) {
            if v.ready > WARPQ_CQ_ENTRIES {
                return Err(format!("WAIT ready {}", v.ready));
            }
            if let (Some(h), Some(b)) = (ring, before) {
                if !self.files[fi].garbage {
                    let after = ready(h);
                    if v.ready < b || v.ready > after {
                        return Err(format!("WAIT said {} ready; the ring had {b} before and {after} after", v.ready));
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn wake_op(&mut self, file: Pick, fd: Pick, arg: Arg) -> Res {
        let Some((_, fd)) = self.pick_fd_file(file, fd) else {
            return self.apply(&OPEN);
        };
        let mut v = warpq_wake { size: Self::size_field(arg.size, 8), rsvd: 0 };
        let size_ok = v.size >= 8;
        let got = self.call(fd, Self::cmd_bits(arg, WARPQ_IOC_WAKE), &mut v, arg.place)?;
        check("WAKE", E_WAKE, got, &arg_expect(arg.place, size_ok, false, Expect::Ok))
    }

    /// A well-formed WAKE.
    pub(super) fn wake(&mut self, fd: i32) -> Res {
        let mut v = warpq_wake { size: 8, rsvd: 0 };
        let got = self.call(fd, WARPQ_IOC_WAKE, &mut v, Place::Normal(0))?;
        check("WAKE", E_WAKE, got, &Expect::Ok)
    }

    pub(super) fn unknown_ioctl(&mut self, file: Pick, fd: Pick, cmd: u64) -> Res {
        let Some((_, fd)) = self.pick_fd_file(file, fd) else {
            return self.apply(&OPEN);
        };
        // A valid buffer so that only the number matters.
        let mut junk = StatsBuf::default();
        junk.s.size = std::mem::size_of::<StatsBuf>() as u32;
        let cmd = cmd as libc::c_ulong;
        let got = self.call(fd, cmd, &mut junk, Place::Normal(0))?;
        check(&format!("ioctl {cmd:#x}"), E_UNKNOWN, got, &Expect::Err(libc::ENOTTY))
    }

    /// The `[addr, addr + len)` a REGISTER of `range` near buffer `bi` names.
    fn reg_range(&self, bi: usize, range: RegRange) -> (u64, u64) {
        let (ba, bl) = (self.bufs[bi].addr, self.bufs[bi].len as u64);
        let bp = bl / PAGE64;
        match range {
            RegRange::Whole => (ba, bl),
            RegRange::Pages(first, count) => {
                let p0 = red(u64::from(first), bp);
                (ba + p0 * PAGE64, (1 + red(u64::from(count), bp - p0)) * PAGE64)
            }
            RegRange::PlusPage => (ba, bl + PAGE64),
            RegRange::Misaligned(off) => (ba + 1 + red(u64::from(off), PAGE64 - 1), bl),
            RegRange::Short(by) => (ba, bl - 1 - red(u64::from(by), PAGE64 - 1)),
            RegRange::Zero => (ba, 0),
            RegRange::Overflow => (u64::MAX - PAGE64 + 1, 2 * PAGE64),
            RegRange::TooLarge => (ba, self.cfg.max_region_bytes + PAGE64),
            RegRange::Tomb(t) => sel(t, self.tombs.len()).map_or((0, PAGE64), |i| self.tombs[i]),
            RegRange::Abs(a, l) => (a, l),
            RegRange::Ring(r) => match self.pick_ring(r) {
                Some((fj, rj)) => (self.files[fj].rings[rj].addr, RING64),
                None => (ba, bl),
            },
        }
    }

    pub(super) fn register(&mut self, file: Pick, fd: Pick, buf: Pick, range: RegRange, access: u32, arg: Arg) -> Res {
        let Some((fi, fd)) = self.pick_fd_file(file, fd) else {
            return self.apply(&OPEN);
        };
        let Some(bi) = self.pick_buf(buf) else {
            return self.apply(&default_buf(buf));
        };
        let (addr, len) = self.reg_range(bi, range);
        let (sem, clean) = self.register_expect(fi, addr, len, access);
        let mut v = warpq_register { size: Self::size_field(arg.size, 32), access, addr, len, handle: 0 };
        let exp = arg_expect(arg.place, v.size >= 32, true, sem);
        let got = self.call(fd, Self::cmd_bits(arg, WARPQ_IOC_REGISTER), &mut v, arg.place)?;
        let what = format!("REGISTER {addr:#x}+{len:#x} access {access:#x}");
        self.log(format!(
            "  file {} {what} size {} -> {} (expected {}){}",
            self.files[fi].id,
            v.size,
            show(got),
            exp.show(),
            if got.is_ok() { format!(" handle {:#x} clean {clean}", v.handle) } else { String::new() }
        ));
        check(&what, E_REGISTER, got, &exp)?;
        // A REGISTER that fails after inserting its region (pinning failed,
        // say) leaves it in the table for a moment: a queued command over
        // it may complete FAULT_UNMAPPED meanwhile. One that succeeds
        // changes what the commands over it complete with.
        self.registration_changed(fi, addr, len);
        if got.is_err() {
            return Ok(());
        }
        let h = v.handle;
        let (slot, generation) = (h & 0xffff, h >> 16);
        if slot >= 16 || generation == 0 || generation > u64::from(u32::MAX) {
            return Err(format!("{what}: handle {h:#x} is not a handle"));
        }
        if self.files[fi].regs.iter().any(|r| r.handle == h) {
            return Err(format!("{what}: handle {h:#x} is already live"));
        }
        let dst_ok = self.owned(addr, len);
        self.files[fi].regs.push(Reg { handle: h, addr, len, access, clean, dst_ok });
        if access & WARPQ_ACCESS_WRITE != 0 && self.files[fi].garbage {
            self.mark_unknown(addr, len);
        }
        Ok(())
    }

    /// The handle UNREGISTER names (empty lists fall through).
    fn handle_of(&self, fi: usize, h: Handle) -> u64 {
        let f = &self.files[fi];
        let lists: [(&[u64], bool); 3] = [
            (&f.regs.iter().map(|r| r.handle).collect::<Vec<_>>(), matches!(h, Handle::Live(_))),
            (&f.dead_handles, matches!(h, Handle::Live(_) | Handle::Dead(_))),
            (&f.foreign_handles, !matches!(h, Handle::Value(_))),
        ];
        let p = match h {
            Handle::Live(p) | Handle::Dead(p) | Handle::Foreign(p) => p,
            Handle::Value(v) => return v,
        };
        lists.iter().filter(|(_, on)| *on).find_map(|(l, _)| sel(p, l.len()).map(|i| l[i])).unwrap_or(0)
    }

    pub(super) fn unregister(&mut self, file: Pick, fd: Pick, handle: Handle, arg: Arg) -> Res {
        let Some((fi, fd)) = self.pick_fd_file(file, fd) else {
            return self.apply(&OPEN);
        };
        let handle = self.handle_of(fi, handle);
        // A stale or foreign handle may name a live region of this queue
        // (a child's first handles equal its parent's).
        let which = self.files[fi].regs.iter().position(|r| r.handle == handle);
        let sem = if which.is_some() {
            Expect::OkOr(vec![libc::EBUSY])
        } else {
            Expect::ErrIn(vec![libc::ENOENT, libc::EINVAL])
        };
        let mut u = warpq_unregister { size: Self::size_field(arg.size, 16), rsvd: 0, handle };
        let exp = arg_expect(arg.place, u.size >= 16, false, sem);
        let got = self.call(fd, Self::cmd_bits(arg, WARPQ_IOC_UNREGISTER), &mut u, arg.place)?;
        self.log(format!("  file {} UNREGISTER {handle:#x} -> {}", self.files[fi].id, show(got)));
        check(&format!("UNREGISTER {handle:#x}"), E_UNREGISTER, got, &exp)?;
        if got.is_ok() {
            let Some(i) = which else {
                return Err(format!(
                    "UNREGISTER of handle {handle:#x}, which names no region of this queue, succeeded"
                ));
            };
            let r = self.files[fi].regs.remove(i);
            self.files[fi].dead_handles.push(handle);
            self.taint(r.addr, r.len, Taint::Status, Some(fi));
        }
        Ok(())
    }

    pub(super) fn submit(&mut self, file: Pick, fd: Pick, ops: &[Sqe], at: SubmitAt, arg: Arg) -> Res {
        let Some((fi, fd)) = self.pick_fd_file(file, fd) else {
            return self.apply(&OPEN);
        };
        let k = ops.len();
        let sqes: Vec<warpq_sqe> = ops.iter().map(|s| self.sqe(fi, s)).collect();
        for s in &sqes {
            self.files[fi].known.insert(s.user_data);
        }
        // Where the entries are: our heap, or the end of the read-only
        // scratch page with `count` running into the PROT_NONE page.
        // `short`: None, an array of `count` entries; Some(false), `k`
        // entries and then unreadable memory; Some(true), nothing readable.
        let (ptr, count, short) = match at {
            SubmitAt::Heap => (sqes.as_ptr() as u64, k as u32, None),
            SubmitAt::Scratch(extra) if k > 0 && k * 64 <= PAGE => {
                let page1 = self.window + PAGE64;
                let off = PAGE - k * 64;
                sys_mprotect(page1, PAGE, RW).map_err(|e| format!("scratch: {}", ename(e)))?;
                let bytes: Vec<u8> = sqes.iter().flat_map(|s| as_bytes(s).to_vec()).collect();
                // SAFETY: scratch page 1 is read/write right now.
                unsafe { super::super::sys::write_mem(page1 + off as u64, &bytes) };
                sys_mprotect(page1, PAGE, RD).map_err(|e| format!("scratch: {}", ename(e)))?;
                (page1 + off as u64, (k + 1 + extra as usize % 64) as u32, Some(false))
            }
            SubmitAt::Scratch(_) | SubmitAt::Null(_) if k == 0 => (0, 0, None),
            SubmitAt::Scratch(extra) => (0, 1 + u32::from(extra) % 64, Some(true)),
            SubmitAt::Null(count) => (0, count, Some(true)),
            SubmitAt::Kernel(count) => (KERNEL_ADDR, count, Some(true)),
        };
        let mut v = warpq_submit { size: Self::size_field(arg.size, 24), count, sqes: ptr, submitted: 0, rsvd: 0 };
        let size_ok = v.size >= 24;
        // Like write(2): the entries before an unreadable one are queued and
        // counted; EFAULT only when none went in (a full ring, say).
        let sem = match short {
            None => Expect::Ok,
            Some(false) => Expect::OkOr(vec![libc::EFAULT]),
            Some(true) => Expect::Err(libc::EFAULT),
        };
        let exp = arg_expect(arg.place, size_ok, true, sem);
        let ring = self.files[fi].read_ring();
        let t0 = ring.map(|h| h.load(H_SQ_TAIL));
        let head = ring.map(|h| h.load(H_SQ_HEAD));
        let got = self.call(fd, Self::cmd_bits(arg, WARPQ_IOC_SUBMIT), &mut v, arg.place)?;
        self.log(format!(
            "  file {}: SUBMIT {k} entries count {count} at {ptr:#x} -> {} submitted {}",
            self.files[fi].id,
            show(got),
            v.submitted
        ));
        check(&format!("SUBMIT of {count} entries"), E_SUBMIT, got, &exp)?;
        let normal = matches!(arg.place, Place::Normal(_));
        let pushed = match (ring, t0) {
            (Some(h), Some(t0)) => Some(h.load(H_SQ_TAIL).wrapping_sub(t0)),
            _ if got.is_ok() && normal => Some(v.submitted),
            _ => None,
        };
        if got.is_err() && pushed.is_some_and(|p| p != 0) {
            return Err(format!("SUBMIT failed with {} but the tail moved by {}", show(got), pushed.unwrap_or(0)));
        }
        if got.is_ok() && normal {
            let readable = if short.is_some() { k as u32 } else { count };
            if v.submitted > readable {
                return Err(format!("SUBMIT queued {} entries of {count} with {readable} readable", v.submitted));
            }
            if let (Some(p), false, Some(t0), Some(h0)) = (pushed, self.files[fi].garbage, t0, head) {
                if p != v.submitted {
                    return Err(format!("SUBMIT said {} queued, the tail moved by {p}", v.submitted));
                }
                let room = WARPQ_SQ_ENTRIES - t0.wrapping_sub(h0).min(WARPQ_SQ_ENTRIES);
                if v.submitted < readable.min(room) {
                    return Err(format!(
                        "SUBMIT queued {} of {readable} readable entries with {room} free slots",
                        v.submitted
                    ));
                }
            }
        }
        if self.files[fi].garbage {
            self.n.commands += u64::from(pushed.unwrap_or(0).min(k as u32));
            return Ok(());
        }
        match pushed {
            Some(p) if p as usize <= k => {
                for s in sqes.into_iter().take(p as usize) {
                    self.outstanding(fi, s);
                }
                let t = self.files[fi].tail.map(|t| t.wrapping_add(p));
                self.files[fi].tail = t;
                Ok(())
            }
            Some(p) => Err(format!("SUBMIT of {k} entries moved the tail by {p}")),
            None => {
                // No readable ring and no answer: how many went in is unknown.
                self.enter_garbage(fi);
                Ok(())
            }
        }
    }
}
