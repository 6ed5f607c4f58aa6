// SPDX-License-Identifier: GPL-2.0

//! Counters, per queue and per device, updated without locks.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::uapi;

/// What a queue (or, summed, a device) has done.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) commands_ok: AtomicU64,
    pub(crate) commands_failed: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) ignored_by_policy: AtomicU64,
    pub(crate) teardowns: AtomicU64,
    pub(crate) drains: AtomicU64,
    pub(crate) drain_timeouts: AtomicU64,
    pub(crate) rebuilds: AtomicU64,
    pub(crate) rebuild_retries: AtomicU64,
    pub(crate) pages_pinned: AtomicU64,
    pub(crate) pages_pinned_peak: AtomicU64,
    pub(crate) faults: AtomicU64,
    pub(crate) zaps: AtomicU64,
    /// Chunks evicted to keep within the device-address share (debugfs
    /// only).
    pub(crate) evictions: AtomicU64,
    /// Invalidations by `enum mmu_notifier_event`.
    pub(crate) by_event: [AtomicU64; 8],
    /// Completions by `WARPQ_STATUS_*`.
    pub(crate) by_status: [AtomicU64; 9],
}

impl Counters {
    /// One invalidation of kind `event` (out-of-range kinds count as CLEAR,
    /// as the policy treats them).
    pub(crate) fn invalidation(&self, event: u32) {
        let i = if (event as usize) < self.by_event.len() { event as usize } else { 1 };
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        self.by_event[i].fetch_add(1, Ordering::Relaxed);
    }

    /// `n` completions with `status`.
    pub(crate) fn completions(&self, status: u32, n: u64) {
        if status == uapi::WARPQ_STATUS_OK {
            self.commands_ok.fetch_add(n, Ordering::Relaxed);
        } else {
            self.commands_failed.fetch_add(n, Ordering::Relaxed);
        }
        if let Some(c) = self.by_status.get(status as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Pages pinned now: add `n` and raise the peak.
    pub(crate) fn pinned(&self, n: u64) {
        let now = self.pages_pinned.fetch_add(n, Ordering::Relaxed).wrapping_add(n);
        self.pages_pinned_peak.fetch_max(now, Ordering::Relaxed);
    }

    /// Pages unpinned.
    pub(crate) fn unpinned(&self, n: u64) {
        self.pages_pinned.fetch_sub(n, Ordering::Relaxed);
    }

    /// Zeroes the counters (`pages_pinned`, a level rather than a count,
    /// is kept; the peak restarts from it).
    pub(crate) fn reset(&self) {
        let pinned = self.pages_pinned.load(Ordering::Relaxed);
        for c in [
            &self.commands_ok,
            &self.commands_failed,
            &self.invalidations,
            &self.ignored_by_policy,
            &self.teardowns,
            &self.drains,
            &self.drain_timeouts,
            &self.rebuilds,
            &self.rebuild_retries,
            &self.faults,
            &self.zaps,
            &self.evictions,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        for c in self.by_event.iter().chain(self.by_status.iter()) {
            c.store(0, Ordering::Relaxed);
        }
        self.pages_pinned_peak.store(pinned, Ordering::Relaxed);
    }

    /// Copies the counters into `out` for STATS and sysfs, each field
    /// atomically (the whole is consistent enough); `size` and the
    /// histograms are the caller's.
    pub(crate) fn snapshot_into(&self, out: &mut uapi::warpq_stats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.commands_ok = get(&self.commands_ok);
        out.commands_failed = get(&self.commands_failed);
        out.invalidations = get(&self.invalidations);
        out.ignored_by_policy = get(&self.ignored_by_policy);
        out.teardowns = get(&self.teardowns);
        out.drains = get(&self.drains);
        out.drain_timeouts = get(&self.drain_timeouts);
        out.rebuilds = get(&self.rebuilds);
        out.rebuild_retries = get(&self.rebuild_retries);
        out.pages_pinned = get(&self.pages_pinned);
        out.pages_pinned_peak = get(&self.pages_pinned_peak);
        out.faults = get(&self.faults);
        out.zaps = get(&self.zaps);
        out.invalidations_by_event = core::array::from_fn(|i| get(&self.by_event[i]));
        out.commands_by_status = core::array::from_fn(|i| get(&self.by_status[i]));
    }

    /// The sysfs `stats` text (format: docs/user.md): one `name value`
    /// line per counter.
    pub(crate) fn write_text(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        const EVENTS: [&str; 8] =
            ["unmap", "clear", "protection_vma", "protection_page", "soft_dirty", "release", "migrate", "exclusive"];
        const STATUSES: [&str; 9] = [
            "ok",
            "invalid",
            "fault_unregistered",
            "fault_bounds",
            "fault_access",
            "fault_unmapped",
            "fault_iommu",
            "aborted",
            "device_error",
        ];
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, counter) in [
            ("commands_ok", &self.commands_ok),
            ("commands_failed", &self.commands_failed),
            ("invalidations", &self.invalidations),
            ("ignored_by_policy", &self.ignored_by_policy),
            ("teardowns", &self.teardowns),
            ("drains", &self.drains),
            ("drain_timeouts", &self.drain_timeouts),
            ("rebuilds", &self.rebuilds),
            ("rebuild_retries", &self.rebuild_retries),
            ("pages_pinned", &self.pages_pinned),
            ("pages_pinned_peak", &self.pages_pinned_peak),
            ("faults", &self.faults),
            ("zaps", &self.zaps),
        ] {
            writeln!(out, "{name} {}", get(counter))?;
        }
        for (name, counter) in EVENTS.iter().zip(&self.by_event) {
            writeln!(out, "invalidations_{name} {}", get(counter))?;
        }
        for (name, counter) in STATUSES.iter().zip(&self.by_status) {
            writeln!(out, "completions_{name} {}", get(counter))?;
        }
        Ok(())
    }
}
