// SPDX-License-Identifier: GPL-2.0

//! What a queue shows of itself: the debugfs `queues` lines (format:
//! docs/user.md), its counters and histograms for STATS.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::hist::Kind;
use crate::mapping::Backing;
use crate::protocol::policy::Policy;
use crate::protocol::region::{Access, RegionInfo, StateKind};
use crate::stats::Counters;
use crate::uapi;

use super::{Queue, PAGE_SIZE};

impl Queue {
    /// The debugfs `queues` lines of this queue: a `queue` line, then one
    /// `region` line per registered region (format: docs/user.md). Takes L.
    pub(crate) fn describe(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        let (mut regions, mut registered, mut mapped) = (0u32, 0u64, 0u64);
        {
            let key = self.lock.lock();
            for info in self.ctx.regions(&key) {
                regions += 1;
                registered += info.desc.len;
                mapped += info.pages * PAGE_SIZE;
            }
        }
        let state = if self.revoked.load(Ordering::Relaxed) || self.ctx.is_released() {
            "dead"
        } else if self.is_orphaned() {
            "exited"
        } else if self.ctx.gate().is_stale() {
            "stale"
        } else {
            "running"
        };
        let (backing, pinned) = match self.backing {
            Backing::Pin => ("pin", mapped),
            Backing::Mirror => ("mirror", 0),
        };
        let policy = match self.config.policy {
            Policy::Strict => "strict",
            Policy::Filtered => "filtered",
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let st = &self.stats;
        write!(out, "queue {} pid {} comm ", self.owner_id, self.owner_pid)?;
        write_comm(out, &self.owner_comm)?;
        writeln!(
            out,
            " backing {backing} policy {policy} state {state} region_count {regions} registered_bytes {registered} \
             mapped_bytes {mapped} pinned_bytes {pinned} commands_ok {} commands_failed {} invalidations {} \
             teardowns {} rebuilds {} faults {} zaps {} set_aside {} ring_held {} evictions {} device_share {}",
            get(&st.commands_ok),
            get(&st.commands_failed),
            get(&st.invalidations),
            get(&st.teardowns),
            get(&st.rebuilds),
            get(&st.faults),
            get(&st.zaps),
            self.set_aside_len.load(Ordering::Relaxed),
            u8::from(self.ring_held.load(Ordering::Relaxed)),
            get(&st.evictions),
            self.config.device_share,
        )?;
        // The region lines, a few at a time: copied under L into a small
        // array (nothing may allocate under L, whose invalidation callback
        // reclaim can call), written out after it.
        let mut next_slot = 0;
        loop {
            let mut lines: [Option<RegionInfo>; 16] = [None; 16];
            {
                let key = self.lock.lock();
                for (line, info) in lines.iter_mut().zip(self.ctx.regions_from(&key, next_slot)) {
                    next_slot = info.desc.handle.slot() + 1;
                    *line = Some(info);
                }
            }
            if lines[0].is_none() {
                return Ok(());
            }
            for info in lines.iter().flatten() {
                self.describe_region(out, info)?;
            }
        }
    }

    /// One `region` line of [`Self::describe`].
    pub(super) fn describe_region(&self, out: &mut impl core::fmt::Write, info: &RegionInfo) -> core::fmt::Result {
        let d = &info.desc;
        let access = match (d.access.contains(Access::READ), d.access.device_writes()) {
            (true, true) => "rw",
            (false, true) => "w",
            _ => "r",
        };
        let state = match info.state {
            StateKind::Pending => "pending",
            StateKind::Unmapped => "unmapped",
            StateKind::Partial { .. } => "partial",
            StateKind::Mapped { .. } => "mapped",
            StateKind::Dead => "dead",
        };
        writeln!(
            out,
            "region {} queue {} addr {:#x} len {} access {access} chunk_bytes {} chunks {} mapped_chunks {} \
             dead_chunks {} mapped_bytes {} state {state}",
            d.handle.to_raw(),
            self.owner_id,
            d.start,
            d.len,
            d.chunk_bytes(),
            d.chunk_count(),
            info.mapped_chunks,
            info.dead_chunks,
            info.pages * PAGE_SIZE,
        )?;
        Ok(())
    }

    /// STATS: this queue's counters and histograms into `out`.
    pub(crate) fn stats_into(&self, out: &mut uapi::warpq_stats) {
        self.stats.snapshot_into(out);
        for (kind, row) in out.hist.iter_mut().enumerate() {
            for (b, bucket) in row.iter_mut().enumerate() {
                *bucket = self.hist.get(kind, b);
            }
        }
    }

    /// Adds a sample to one histogram of the queue and of its device.
    pub(super) fn record(&self, kind: Kind, ns: u64) {
        self.hist.record(kind, ns);
        self.dev.hist.record(kind, ns);
    }

    /// Adds `by` to one counter of the queue and of its device.
    pub(super) fn count(&self, which: fn(&Counters) -> &AtomicU64, by: u64) {
        which(&self.stats).fetch_add(by, Ordering::Relaxed);
        which(&self.dev.stats).fetch_add(by, Ordering::Relaxed);
    }
}

/// A task's `comm` as one word: bytes up to the NUL, with space, backslash
/// and non-printing bytes as `\xNN`.
pub(super) fn write_comm(out: &mut impl core::fmt::Write, comm: &[u8]) -> core::fmt::Result {
    for &b in comm.iter().take_while(|&&b| b != 0) {
        if b.is_ascii_graphic() && b != b'\\' {
            out.write_char(b as char)?;
        } else {
            write!(out, "\\x{b:02x}")?;
        }
    }
    Ok(())
}
